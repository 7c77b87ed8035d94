"""The report and the export, built from a small synthetic asv history on the CPU: two machines (never
mixed), a gap, a failed benchmark, a benchmark that is new and one that is gone, a regression. The
site is opened in headless Chromium: no console errors, no network, every variant present, images
loaded; screenshots are kept under reports/screenshots/synthetic/ (ignored by git)."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from variantbench import gate, report
from variantbench.catalog import families

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


def _grid_entry(values, benchmark_params):
    columns = len(values)
    return [values, benchmark_params, "1", 0, 1.0, None, None, [v if v == v else None for v in values],
            [v if v == v else None for v in values], [1] * columns, [10] * columns, None]


def _params(variants, implementations, shapes):
    return [[f"'{v}'" for v in variants], [f"'{i}'" for i in implementations], [f"'{s}'" for s in shapes]]


def _write_results(folder, machine, gpu, commit, date_ms, results):
    identity = {"arch": "x86_64", "cpu": "x86_64", "cuda": "13.0", "device": "cuda", "driver": "580.1",
                "gpu": gpu, "machine": machine, "num_cpu": "16", "os": "Linux", "python": "python3",
                "ram": "1", "torch": "2.11.0", "triton": "3.6.0"}
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


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Four commits on an H100, two on an H200. The third H100 commit has no results at all (a gap);
    at the fourth, causal/triton's forward fails (null), is 25% slower than before, and sliding
    window is 12x its baseline (over budget); the MoE benchmark is new at the fourth commit."""
    folder = tmp_path_factory.mktemp("results")
    commits = _commits(4)
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
        results[FORWARD] = _grid_entry([t if t is not None else math.nan for t in times], grid)
        results[FORWARD][0] = times  # asv writes null for a failure, NaN for a skip
        results[RATIO] = _grid_entry(ratios, grid)
        results[TFLOPS] = _grid_entry([530.0, 400.0, 530.0, 400.0, 60.0, 330.0], grid)
        _write_results(folder, "h100", "NVIDIA H100 80GB HBM3", commit, 1_700_000_000_000 + i * 3_600_000, results)
    for i, commit in enumerate(commits[:2]):
        _write_results(folder, "h200", "NVIDIA H200", commit, 1_700_000_000_000 + i * 3_600_000,
                       {FORWARD: _grid_entry([0.8e-3] * 6, grid), RATIO: _grid_entry([1.0] * 6, grid)})
    _benchmarks_json(folder)
    return folder, commits


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
    table = h100[h100.index("<tbody>"):]
    assert table.index('class="failed"') < table.index('class="over-budget"') < table.index('class="within"')
    assert "sliding_window_1024/sdpa @ llama-3-8b-s4k (over budget)" in h100
    assert "causal/triton @ llama-3-8b-s4k (failed)" in h100
    assert commits[3][:8] in h100 and "Regressions in the history" in h100
    assert f"attention/gqa_8/triton/{SHAPE} at {commits[3][:8]}" in h100


def test_every_catalog_variant_appears(site):
    _, summary = site
    page = summary.read_text()
    for fam in families():
        for variant in fam.variants:
            assert variant.name in page, variant.name


def test_history_marks_the_regression_and_keeps_the_gap(history):
    folder, commits = history
    frame = report.results.load_history(folder)
    times = report.history_frame(frame, "h100")
    assert list(times.index) == [commits[0], commits[1], commits[3]]  # the gap commit has no row
    assert report.regressions(times, 1.10) == [(f"attention/gqa_8/triton/{SHAPE}", commits[3])]


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


def test_export_and_report_bad_input_is_one_line_exit_2(history, tmp_path):
    from click.testing import CliRunner

    from variantbench.cli import main

    folder, _ = history
    runner = CliRunner()
    missing = runner.invoke(main, ["export", "--results", str(folder), "-o", str(tmp_path / "no" / "x.csv")])
    assert missing.exit_code == 2 and "cannot write" in missing.output and "Traceback" not in missing.output
    bad = tmp_path / "bad"
    (bad / "m").mkdir(parents=True)
    (bad / "m" / "x.json").write_text('{"commit_hash": "ab')
    for args in (["export", "-o", str(tmp_path / "x.csv")], ["report", "--no-asv", "--html", str(tmp_path / "h")]):
        broken = runner.invoke(main, [*args, "--results", str(bad)])
        assert broken.exit_code == 2 and "not a readable asv results file" in broken.output
    assert not (tmp_path / "x.csv").exists()


def test_report_without_results_is_one_line(tmp_path):
    with pytest.raises(report.ReportError, match="no results"):
        report.build(ROOT, tmp_path, tmp_path / "html", gate.load_settings(ROOT / "pyproject.toml"))


CHROMIUM = shutil.which("chromium")


def _open(url, screenshot=None):
    """Load url in headless Chromium; (console errors, non-file requests, broken images, text)."""
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
        if screenshot:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot))
        browser.close()
    return errors, [r for r in requests if not r.startswith("file:")], broken, text


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make browser` installs it)")
def test_summary_page_in_chromium(site):
    html_dir, summary = site
    shots = ROOT / "reports" / "screenshots" / "synthetic"
    errors, network, broken, text = _open(summary.as_uri(), shots / "summary.png")
    assert errors == [] and network == [] and broken == []
    for fam in families():
        for variant in fam.variants:
            assert variant.name in text
    assert (shots / "summary.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make browser` installs it)")
def test_asv_graph_page_works_from_disk(site):
    html_dir, _ = site
    url = (html_dir / "index.html").as_uri() + f"#{FORWARD}?machine=h100&p-variant='gqa_8'"
    errors, network, _, text = _open(url, ROOT / "reports" / "screenshots" / "synthetic" / "asv.png")
    assert errors == [] and network == []
    assert "gqa_8" in text
