"""The report and the export, built from a small synthetic asv history on the CPU: two machines (never
mixed), a gap, a failed benchmark, a benchmark that is new and one that is gone, a regression. The
site is opened in headless Chromium: no console errors, no network, every measured variant in the
tables, images loaded; screenshots are kept under reports/screenshots/synthetic/ (ignored by git).
A failed build keeps the previous site; one machine name on two GPUs is two sections; a step in
the history is a regression only where its samples' noise says so."""

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from variantbench import gate, report
from variantbench import history as history_module

ROOT = Path(__file__).resolve().parent.parent
FORWARD = "bench_attention.AttentionForward.time_forward"
RATIO = "bench_attention.AttentionMetrics.track_ratio_to_baseline"
TFLOPS = "bench_attention.AttentionMetrics.track_tflops"
MOE_FORWARD = "bench_moe.MoEForward.time_forward"
VARIANTS = ["causal", "gqa_8", "sliding_window_1024"]
IMPLEMENTATIONS = ["sdpa", "triton"]
SHAPE = "llama-3-8b-s4k"


def _commits(count):
    listed = subprocess.run(["git", "rev-list", f"--max-count={count}", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    if len(listed) < count:
        pytest.skip(f"needs {count} commits of history (a shallow clone has {len(listed)})")
    return list(reversed(listed))


def _grid_entry(values, benchmark_params, samples=None):
    columns = len(values)
    return [values, benchmark_params, "1", 0, 1.0, None, None, [v if v == v else None for v in values],
            [v if v == v else None for v in values], [1] * columns, [10] * columns, samples]


def _params(variants, implementations, shapes):
    return [[f"'{v}'" for v in variants], [f"'{i}'" for i in implementations], [f"'{s}'" for s in shapes]]


def _write_results(folder, machine, gpu, commit, date_ms, results):
    identity = {"arch": "x86_64", "cpu": "x86_64", "cuda": "13.0", "device": "cuda", "driver": "580.1",
                "gpu": gpu, "gpu_count": "1", "machine": machine, "num_cpu": "16", "os": "Linux",
                "python": "python3", "ram": "1", "torch": "2.11.0", "triton": "3.6.0"}
    (folder / machine).mkdir(parents=True, exist_ok=True)
    (folder / machine / "machine.json").write_text(json.dumps({**identity, "version": 1}))
    data = {"commit_hash": commit, "env_name": "existing-py", "date": date_ms, "params": identity,
            "python": "python3", "requirements": {}, "env_vars": {},
            "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
                               "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
                               "samples", "profile"],
            "results": results, "durations": {}, "version": 2}
    (folder / machine / f"{commit[:8]}-existing-py.json").write_text(json.dumps(data))


def _benchmarks_json(folder):
    """The suite's discovery record for the synthetic grid: asv publishes only what it lists."""
    def entry(name, kind, unit, params):
        return {"name": name, "type": kind, "unit": unit, "params": params,
                "param_names": ["variant", "implementation", "shape"], "version": "1", "timeout": 600}

    grid = _params(VARIANTS, IMPLEMENTATIONS, [SHAPE])
    moe = _params(["softmax_topk"], ["grouped_mm"], ["mixtral-8x7b-prefill-t8k-uniform"])
    listing = {FORWARD: entry(FORWARD, "time", "seconds", grid),
               RATIO: entry(RATIO, "track", "x", grid),
               TFLOPS: entry(TFLOPS, "track", "TFLOP/s", grid),
               MOE_FORWARD: entry(MOE_FORWARD, "time", "seconds", moe)}
    (folder / "benchmarks.json").write_text(json.dumps({**listing, "version": 2}))


def _make_history(folder, commits, skipped=()):
    """Four commits on an H100, two on an H200. The third H100 commit has no results at all (a gap);
    at the fourth, causal/triton's forward fails (null), gqa_8/triton is 25% slower than before, and
    sliding window is 12x its baseline (over budget); the MoE benchmark is new at the fourth commit.
    Variants in `skipped` have no figures at all (asv's NaN: skipped)."""
    grid = _params(VARIANTS, IMPLEMENTATIONS, [SHAPE])
    base_ms = [1.0e-3, 1.3e-3, 1.0e-3, 1.3e-3, 3.4e-3, 0.7e-3]
    for i, commit in enumerate(commits):
        if i == 2:
            continue
        times = list(base_ms)
        ratios = [1.0, 1.3, 1.0, 1.3, 12.0, 1.05]
        results = {}
        if i == 3:
            times[3] *= 1.25  # gqa_8/triton slower than at commit 1: a regression
            times[1] = None  # causal/triton failed
            results[MOE_FORWARD] = _grid_entry([11.6e-3], _params(["softmax_topk"], ["grouped_mm"],
                                                                  ["mixtral-8x7b-prefill-t8k-uniform"]))
        tflops = [530.0, 400.0, 530.0, 400.0, 60.0, 330.0]
        for column, variant in enumerate(v for v in VARIANTS for _ in IMPLEMENTATIONS):
            if variant in skipped:
                times[column] = ratios[column] = tflops[column] = math.nan
        results[FORWARD] = _grid_entry([t if t is not None else math.nan for t in times], grid)
        results[FORWARD][0] = times  # asv writes null for a failure, NaN for a skip
        results[RATIO] = _grid_entry(ratios, grid)
        results[TFLOPS] = _grid_entry(tflops, grid)
        _write_results(folder, "h100", "NVIDIA H100 80GB HBM3", commit, 1_700_000_000_000 + i * 3_600_000, results)
    for i, commit in enumerate(commits[:2]):
        _write_results(folder, "h200", "NVIDIA H200", commit, 1_700_000_000_000 + i * 3_600_000,
                       {FORWARD: _grid_entry([0.8e-3] * 6, grid), RATIO: _grid_entry([1.0] * 6, grid)})
    _benchmarks_json(folder)
    return folder


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    commits = _commits(4)
    return _make_history(tmp_path_factory.mktemp("results"), commits), commits


@pytest.fixture(scope="module")
def site(history, tmp_path_factory):
    folder, _ = history
    html_dir = tmp_path_factory.mktemp("html")
    settings = gate.load_settings(ROOT / "pyproject.toml")
    summary = report.build(ROOT, folder, html_dir, settings)
    return html_dir, summary


def test_summary_has_a_section_per_machine_never_mixed(site):
    _, summary = site
    page = summary.read_text()
    assert page.count('<section class="machine"') == 2
    h100 = page[page.index('id="h100"'):page.index('id="h200"')]
    assert "NVIDIA H100 80GB HBM3" in h100 and "NVIDIA H200" not in h100


def test_summary_flags_over_budget_and_failed_first(site, history):
    _, summary = site
    _, commits = history
    page = summary.read_text()
    h100 = page[page.index('id="h100"'):page.index('id="h200"')]
    table = h100[h100.index("<h4>Every implementation</h4>"):]
    assert table.index('class="failed"') < table.index('class="over-budget"') < table.index('class="within"')
    assert "sliding_window_1024/sdpa @ llama-3-8b-s4k (over budget)" in h100
    assert "causal/triton @ llama-3-8b-s4k (failed)" in h100
    assert commits[3][:8] in h100 and "Regressions in the history" in h100
    assert f"attention/gqa_8/triton/{SHAPE} at {commits[3][:8]}" in h100


def _section(page, section_id):
    start = page.index(f'<section class="machine" id="{section_id}"')
    return page[start:page.index("</section>", start)]


def _row_variants(page, section_id, family):
    """The variants in the rows of one family's table in one section (the page's header lists the
    whole catalog, and "Not measured" lines name variants too: only rows say what was measured)."""
    section = _section(page, section_id)
    part = section[section.index(f"<h3>{family}</h3>"):]
    part = part[:part.index("<h3>", 4)] if "<h3>" in part[4:] else part
    return {html.unescape(v) for v in re.findall(r"<tr[^>]*><td>[^<]*</td><td>([^<]*)</td>", part)}


def test_every_measured_variant_has_a_row(site, history):
    folder, _ = history
    _, summary = site
    page = summary.read_text()
    frame = report.results.load_history(folder)
    measured = frame[frame.value.notna() | frame.failed]
    for (machine, family), rows in measured.groupby(
            [measured.machine, measured.benchmark.str.extract(r"^bench_(\w+)\.", expand=False)]):
        expected = {p[0] for p in rows.params}
        assert expected <= _row_variants(page, machine, family), (machine, family)
    assert _row_variants(page, "h100", "attention") == set(VARIANTS)


def test_the_row_check_sees_a_variant_without_results(history, tmp_path):
    """sliding_window_1024 skipped at every H100 commit: its name is still on the page (catalog,
    "Not measured"), which the old check took for a measurement; it has no row."""
    folder = _make_history(tmp_path / "results", history[1], skipped=("sliding_window_1024",))
    summary = report.build(ROOT, folder, tmp_path / "html", gate.load_settings(ROOT / "pyproject.toml"),
                           with_asv=False)
    page = summary.read_text()
    assert "sliding_window_1024" in _section(page, "h100")
    assert "sliding_window_1024" not in _row_variants(page, "h100", "attention")
    assert _row_variants(page, "h100", "attention") == {"causal", "gqa_8"}


def test_history_marks_the_regression_and_keeps_the_gap(history):
    folder, commits = history
    frame = report.results.load_history(folder)
    rows = history_module.forward_rows(frame[frame.machine == "h100"])
    assert list(history_module.times(rows).index) == [commits[0], commits[1], commits[3]]  # the gap has no row
    slower = [(s.case, s.commit) for s in history_module.steps(rows, 1.10) if s.verdict == "slower"]
    assert slower == [(f"attention/gqa_8/triton/{SHAPE}", commits[3])]


def test_asv_pages_point_at_local_copies_only(site):
    html_dir, _ = site
    for page in html_dir.glob("*.html"):
        text = page.read_text()
        assert "https://cdn" not in text and "code.jquery.com" not in text, page.name
    assert (html_dir / "vendor" / "offline-data.js").read_text().startswith("window.VARIANTBENCH_OFFLINE")


def test_export_csv_round_trips_and_parquet_says_what_it_needs(history, tmp_path):
    import pandas as pd

    folder, _ = history
    count = report.export(folder, tmp_path / "history.csv")
    frame = pd.read_csv(tmp_path / "history.csv")
    assert len(frame) == count and {"benchmark", "params", "commit", "machine", "gpu", "date"} <= set(frame.columns)
    assert set(frame.machine) == {"h100", "h200"}
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(report.ReportError, match="pyarrow"):
            report.export(folder, tmp_path / "history.parquet")
        assert not list(tmp_path.glob("*.parquet*"))
    with pytest.raises(report.ReportError, match="csv or .parquet"):
        report.export(folder, tmp_path / "history.xlsx")


def test_one_machine_name_on_two_gpus_is_two_sections(tmp_path):
    """Two commits recorded as `gpu-runner`, the first on an H100, the second on an H200 taking 1.5x
    as long: one section would draw them as one history with a regression between them."""
    commits = _commits(2)
    grid = _params(["gqa_8"], ["sdpa"], [SHAPE])
    folder = tmp_path / "results"
    for i, (gpu, ms) in enumerate([("NVIDIA H100 80GB HBM3", 1.0e-3), ("NVIDIA H200", 1.5e-3)]):
        _write_results(folder, "gpu-runner", gpu, commits[i], 1_700_000_000_000 + i * 3_600_000,
                       {FORWARD: _grid_entry([ms], grid), RATIO: _grid_entry([1.0], grid)})
    summary = report.build(ROOT, folder, tmp_path / "html", gate.load_settings(ROOT / "pyproject.toml"),
                           with_asv=False)
    page = summary.read_text()
    assert page.count('<section class="machine"') == 2 and "Regressions in the history" not in page
    h100 = _section(page, "gpu-runner-gpu-NVIDIA-H100-80GB-HBM3")
    h200 = _section(page, "gpu-runner-gpu-NVIDIA-H200")
    assert "<h2>gpu-runner · gpu NVIDIA H100 80GB HBM3</h2>" in h100 and commits[1][:8] not in h100
    assert "<h2>gpu-runner · gpu NVIDIA H200</h2>" in h200 and commits[0][:8] not in h200
    for section in (h100, h200):
        assert '<p class="note">Results recorded under the machine name gpu-runner come from 2 different machines ' \
               "(gpu differ)" in section
    assert "gpu=NVIDIA+H200" in h200


def _samples(ms, spread):
    """Ten samples around ms, spread (relative) apart at most: deterministic, median ms."""
    return [ms * (1 + spread * k / 4.5) for k in (-4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5)]


def test_a_step_is_marked_only_where_its_noise_says_so(tmp_path):
    """Two cases 1.12x slower at the second commit: gqa_8/sdpa with samples within 0.3% of their
    median, gqa_8/triton within 10%. Only the clean step is a regression."""
    commits = _commits(2)
    grid = _params(["gqa_8"], ["sdpa", "triton"], [SHAPE])
    folder = tmp_path / "results"
    for i, step in enumerate([1.0, 1.12]):
        ms = [1.0e-3 * step, 1.3e-3 * step]
        samples = [_samples(ms[0], 0.003), _samples(ms[1], 0.10)]
        _write_results(folder, "h100", "NVIDIA H100 80GB HBM3", commits[i], 1_700_000_000_000 + i * 3_600_000,
                       {FORWARD: _grid_entry(ms, grid, samples)})
    summary = report.build(ROOT, folder, tmp_path / "html", gate.load_settings(ROOT / "pyproject.toml"),
                           with_asv=False)
    page = summary.read_text()
    marked = page[page.index("Regressions in the history"):]
    marked = marked[:marked.index("</p>")]
    assert f"attention/gqa_8/sdpa/{SHAPE} at {commits[1][:8]} (1.12x)" in marked
    assert "gqa_8/triton" not in marked
    assert f"attention/gqa_8/triton/{SHAPE} at {commits[1][:8]} (1.12x, noisy)" in page


CHROMIUM = shutil.which("chromium")


def _open(url, screenshot=None):
    """Load url in headless Chromium; (console errors, non-file requests, broken images, text, the
    second cell of every table row: a summary row's variant)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors, requests = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url)
        page.wait_for_load_state("networkidle")
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
        text = page.inner_text("body")
        cells = page.evaluate("[...document.querySelectorAll('tbody tr td:nth-child(2)')].map(td => td.textContent)")
        if screenshot:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
        browser.close()
    return errors, [r for r in requests if not r.startswith("file:")], broken, text, cells


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make browser` installs it)")
def test_summary_page_in_chromium(site):
    html_dir, summary = site
    shots = ROOT / "reports" / "screenshots" / "synthetic"
    errors, network, broken, _, cells = _open(summary.as_uri(), shots / "summary.png")
    assert errors == [] and network == [] and broken == []
    assert set(cells) == {*VARIANTS, "softmax_topk"}  # every measured variant has rows, shown
    assert (shots / "summary.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make browser` installs it)")
def test_asv_graph_page_works_from_disk(site):
    html_dir, _ = site
    url = (html_dir / "index.html").as_uri() + f"#{FORWARD}?machine=h100&p-variant='gqa_8'"
    errors, network, _, text, _ = _open(url, ROOT / "reports" / "screenshots" / "synthetic" / "asv.png")
    assert errors == [] and network == []
    assert "gqa_8" in text


def test_each_family_leads_with_one_row_per_variant_its_fastest_fused_implementation():
    """The leading table judges a variant by its fastest fused implementation: window is over budget
    through SDPA but within through ours, so it is within; the reference never counts."""
    from variantbench import summary

    table = pd.DataFrame([
        ("attention", "s4k", "sliding_window_1024", "sdpa", 7.6, 7.6, 0.01, 1.1, "over budget"),
        ("attention", "s4k", "sliding_window_1024", "triton", 1.05, 0.6, 0.01, 1.1, "within"),
        ("attention", "s4k", "sliding_window_1024", "reference", 0.5, 30.0, 0.01, 1.1, "within"),
        ("attention", "s4k", "alibi", "flex", 2.1, 1.9, 0.01, 1.1, "over budget"),
    ], columns=["family", "shape", "variant", "implementation", "x baseline", "time ratio", "standard_error",
                "budget", "verdict"])
    variants = summary.variant_table(table)
    assert list(zip(variants.variant, variants.fastest, variants.verdict)) == [
        ("alibi", "flex", "over budget"), ("sliding_window_1024", "triton", "within")]
    assert variants.time_ratio.tolist() == [1.9, 0.6]


def test_each_row_says_what_its_case_ran_through_at_its_commit(history, tmp_path):
    """choices.py's record beside a results file: the row of that machine and commit shows it, a row
    of another machine or commit does not borrow it; an unreadable record refuses the site, whose
    previous build stays."""
    folder = _make_history(tmp_path / "results", history[1])
    latest = history[1][-1][:8]
    (folder / "h100" / f"{latest}-existing-py.choices").write_text(json.dumps(
        {f"attention/gqa_8/sdpa/{SHAPE}": "CUDNN_ATTENTION", f"attention/gqa_8/triton/{SHAPE}": "triton (BLOCK_M 128)"}))
    (folder / "h200" / f"{history[1][0][:8]}-existing-py.choices").write_text(json.dumps(
        {f"attention/gqa_8/sdpa/{SHAPE}": "FLASH_ATTENTION"}))
    settings = gate.load_settings(ROOT / "pyproject.toml")
    page = report.build(ROOT, folder, tmp_path / "html", settings, with_asv=False).read_text()
    h100, h200 = _section(page, "h100"), _section(page, "h200")
    assert re.search(r"<td>gqa_8</td><td>sdpa</td>.*?<td>CUDNN_ATTENTION</td><td><code>" + latest, h100)
    assert "<td>triton (BLOCK_M 128)</td>" in h100 and "FLASH_ATTENTION" not in h100
    assert "CUDNN_ATTENTION" not in h200  # the H200's latest commit recorded nothing
    (folder / "h100" / f"{latest}-existing-py.choices").write_text('{"attention/gqa_8')  # cut by a crash
    with pytest.raises(report.results.BadResults, match="not readable as choices"):
        report.build(ROOT, folder, tmp_path / "html", settings, with_asv=False)
    assert "CUDNN_ATTENTION" in (tmp_path / "html" / report.SUMMARY_DIR / "index.html").read_text()
