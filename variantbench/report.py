"""The report: asv's published history plus a summary page of ours, one static site that works opened
from disk with no network.

asv publish renders the per-benchmark history; its pages load jQuery, Flot and Bootstrap from CDNs,
so the site carries those libraries (variantbench/assets/vendor, from npm: jquery 3.3.1, flot 0.8.3,
flot-orderbars 1.0.0, stupid-table-plugin 1.1.3, blueimp-md5 2.19.0, bootstrap 3.1.1) and its pages
are pointed at them. The summary page (variantbench/index.html) shows, per machine (never mixed: one
machine name measured on two GPU models or software stacks is two sections) and family: the latest
commit's figures for every variant and implementation, flagged variants first, and matplotlib plots
of the ratio to baseline against the signal budget, % of roofline per implementation, and each
forward's history over commits with regressions (variantbench.history) marked.
"""

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pandas as pd

from variantbench import choices
from variantbench import history as hist
from variantbench import results
from variantbench.summary import FIGURES, commit_dates, family_table, variant_table
from variantbench.cases import case_name
from variantbench.catalog import families

ASSETS = Path(__file__).parent / "assets" / "vendor"
CDN = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": "jquery.flot.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js": "jquery.flot.time.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js": "jquery.flot.selection.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js": "jquery.flot.categories.js",
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": "stupidtable.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": "md5.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": "css/bootstrap.min.css",
}
SUMMARY_DIR = "variantbench"

class ReportError(Exception):
    """The report cannot be built (no results, asv publish failed); the message says why."""


def load(results_dir: Path) -> pd.DataFrame:
    """The tidy history of results_dir; ReportError where it has none (a missing or empty folder)."""
    frame = results.load_history(results_dir)
    if frame.empty:
        raise ReportError(f"no results under {results_dir}: run `variantbench run` first")
    return frame


def _check_asv_inputs(results_dir: Path):
    """The files asv publish reads besides the results, each read here first: asv's own message
    names no file for benchmarks.json and says to run asv itself."""
    for path in [Path(results_dir) / "benchmarks.json", *sorted(Path(results_dir).glob("*/machine.json"))]:
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as error:
            why = "missing" if isinstance(error, FileNotFoundError) else f"not readable JSON ({error})"
            raise ReportError(f"{path}: {why}; `variantbench run` writes it beside the results it records "
                              "(or restore the committed copy with git checkout)") from None


def publish_asv(root: Path, results_dir: Path, html_dir: Path):
    """asv publish of results_dir into html_dir (through a copy of asv.conf.json pointing there), then
    point its pages at the carried libraries instead of CDNs."""
    config = json.loads((root / "asv.conf.json").read_text())
    config.update(repo=str(root.resolve()), results_dir=str(Path(results_dir).resolve()),
                  html_dir=str(Path(html_dir).resolve()))
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="asv-publish-") as conf:
        json.dump(config, conf)
        conf.flush()
        done = subprocess.run(["asv", "publish", "--config", conf.name], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise ReportError(f"asv publish failed: {last[-1] if last else 'exit ' + str(done.returncode)}")
    vendor = html_dir / "vendor"
    shutil.copytree(ASSETS, vendor, dirs_exist_ok=True)
    for page in html_dir.glob("*.html"):
        text = page.read_text()
        for url, local in CDN.items():
            text = text.replace(url, f"vendor/{local}")
        # The CDN tags carry subresource-integrity hashes of the CDN's minified files and ask for CORS,
        # which Chromium refuses for every file:// load: the local copies go without both.
        text = re.sub(r'(<(?:script|link)[^>]*"vendor/[^>]*?)\s+integrity="[^"]*"', r"\1", text)
        text = re.sub(r'(<(?:script|link)[^>]*"vendor/[^>]*?)\s+crossorigin="[^"]*"', r"\1", text)
        jquery = re.search(r'<script src="vendor/jquery-[^"]*"[^>]*></script>', text)
        if jquery:
            shim = '<script src="vendor/offline-data.js"></script><script src="vendor/offline.js"></script>'
            text = text[:jquery.end()] + shim + text[jquery.end():]
        page.write_text(text)
    _embed_json(html_dir)


def _embed_json(html_dir: Path):
    """Every JSON file of the published site, as text keyed by its path, in vendor/offline-data.js;
    with vendor/offline.js, asv's pages read them with no server (see that file). The liveness probe
    asv's graph page makes (swallow.ico, as text) is answered too."""
    files = {path.relative_to(html_dir).as_posix(): path.read_text() for path in html_dir.rglob("*.json")}
    files["swallow.ico"] = ""
    vendor = html_dir / "vendor"
    shutil.copy(ASSETS.parent / "offline.js", vendor / "offline.js")
    (vendor / "offline-data.js").write_text("window.VARIANTBENCH_OFFLINE = " + json.dumps(files) + ";\n")


def _variant_html(variants: pd.DataFrame) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("shape", "variant", "fastest fused", "x baseline per useful work",
                                            "± se", "budget", "verdict", "time ratio"))
    body = "".join(
        f'<tr class="{html.escape(r.verdict.replace(" ", "-"))}"><td>{html.escape(r.shape)}</td>'
        f"<td>{html.escape(r.variant)}</td><td>{html.escape(r.fastest or '-')}</td>"
        f"<td class=num>{_number(r.ratio, '')}</td><td class=num>{_number(100 * r.standard_error, '')}%</td>"
        f"<td class=num>{r.budget:.2f}x</td><td>{html.escape(r.verdict)}</td>"
        f"<td class=num>{_number(r.time_ratio, '')}</td></tr>" for r in variants.itertuples())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plots(out: Path, stem: str, table: pd.DataFrame, times: pd.DataFrame, marks: list) -> dict:
    """matplotlib figures of one machine's family: {kind: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = {}
    ratio = table.dropna(subset=["x baseline"])
    if not ratio.empty:
        labels = [f"{r.variant}/{r.implementation} @ {r.shape}" for r in ratio.itertuples()]
        fig, ax = plt.subplots(figsize=(9, 0.28 * len(labels) + 1.2))
        colors = ["#c0392b" if v == "over budget" else "#e0a800" if v == "at budget" else "#2e86c1"
                  for v in ratio.verdict]
        ax.barh(range(len(labels)), ratio["x baseline"], color=colors)
        ax.axvline(ratio.budget.max(), color="black", linestyle="--", label=f"signal budget {ratio.budget.max():.2f}x")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("cost per useful work, x the family baseline (log)")
        ax.legend(loc="lower right", fontsize=8)
        made["ratio"] = _save(fig, out / f"{stem}-ratio.png")
    peak = table.dropna(subset=["% roofline"])
    if not peak.empty:
        pivot = peak.pivot_table(index="variant", columns="implementation", values="% roofline", aggfunc="max")
        fig, ax = plt.subplots(figsize=(9, 3.6))
        pivot.plot.bar(ax=ax, rot=30, fontsize=8)
        ax.axhline(100, color="black", linestyle="--", linewidth=1)
        ax.set_ylabel("% of roofline (measured peaks)")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=8)
        made["roofline"] = _save(fig, out / f"{stem}-roofline.png")
    if not times.empty:
        made["history"] = _save(hist.plot(times, marks), out / f"{stem}-history.png")
    return made


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def _asv_link(benchmark, row, machine, identity):
    """asv's page for a case's forward: its graph of every commit, filtered to this case (and to
    this section's identity where one machine name has several)."""
    query = urllib.parse.urlencode({"machine": machine, **identity, "p-variant": f"'{row.variant}'",
                                    "p-implementation": f"'{row.implementation}'", "p-shape": f"'{row.shape}'"})
    return f"../index.html#{benchmark}?{query}"


def _number(value, column):
    if value != value:
        return ""
    return f"{value:.1e}" if column == "max error" else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _table_html(forward_benchmark, table, machine, identity, ran_through):
    """`ran_through(row)`: what the row's case ran through at its commit (choices.py), or ""."""
    columns = [c for _, c, _ in FIGURES]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["shape", "variant", "implementation", *columns[:5],
                                                           "budget", *columns[5:], "ran through", "commit", "history"])
    body = []
    for row in table.itertuples():
        verdict = f' class="{row.verdict.replace(" ", "-")}"' if row.verdict else ""
        figures = [_number(table.loc[row.Index, c], c) for c in columns]
        budget = f"{row.verdict} ({row.budget:.2f}x)" if row.verdict else ""
        body.append(
            f"<tr{verdict}>"
            + "".join(f"<td>{html.escape(str(c))}</td>" for c in (row.shape, row.variant, row.implementation))
            + "".join(f"<td class=num>{f}</td>" for f in figures[:5])
            + f"<td>{html.escape(budget)}</td>"
            + "".join(f"<td class=num>{f}</td>" for f in figures[5:])
            + f"<td>{html.escape(ran_through(row))}</td>"
            + f"<td><code>{html.escape(str(row.commit))}</code></td>"
            + f'<td><a href="{html.escape(_asv_link(forward_benchmark, row, machine, identity))}">asv</a></td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.over-budget td { background: #fdecea; }
tr.at-budget td { background: #fff8e1; }
tr.failed td { background: #f5b7b1; font-weight: bold; }
.identity { color: #555; font-size: 13px; }
.flagged { color: #c0392b; font-weight: bold; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
section.machine { border-top: 3px solid #2e86c1; margin-top: 2em; }
p.note { background: #fff3cd; border-left: 4px solid #e0a800; padding: 4px 8px; }
"""


def _section_html(out: Path, section: dict, benchmarks, settings, outside: set, through: dict) -> str:
    """One machine identity's section: identity, then per family the table, plots and history.
    `through`: choices.recorded, what each case ran through per (machine, commit)."""
    mine, machine = section["rows"], section["rows"].machine.iloc[0]
    order = commit_dates(mine)
    identity = mine[mine.commit == order.commit.iloc[-1]].iloc[0]
    count = hist.text(identity.gpu_count)
    gpus = f"{count} x {identity.gpu}" if count not in ("1", "unknown") else str(identity.gpu)
    forward = hist.forward_rows(mine, outside)
    times = hist.times(forward)
    steps = hist.steps(forward, settings.regression_factor)
    parts = [
        f'<section class="machine" id="{html.escape(section["id"])}"><h2>{html.escape(section["title"])}</h2>',
        f'<p class="note">{html.escape(section["note"])}</p>' if section["note"] else "",
        f'<p class="identity">{html.escape(gpus)}, driver {html.escape(str(identity.driver))}, '
        f"CUDA {html.escape(str(identity.cuda))}, torch {html.escape(str(identity.torch))}, "
        f"triton {html.escape(str(identity.triton))}, cuDNN {html.escape(hist.text(identity.get('cudnn')))}, "
        f"NCCL {html.escape(hist.text(identity.get('nccl')))}. Latest commit <code>{order.commit.iloc[-1][:8]}</code> "
        f"({order.date.iloc[-1]:%Y-%m-%d %H:%M}); {order.commit.nunique()} commits measured here.</p>",
    ]
    for fam in families():
        table = family_table(mine, order, fam.name, settings.budget_for)
        fam_times = times[[c for c in times.columns if c.startswith(fam.name + "/")]].dropna(how="all")
        fam_steps = [s for s in steps if s.case.startswith(fam.name + "/")]
        marks = [(s.case, s.commit) for s in fam_steps if s.verdict == "slower"]
        parts.append(f"<h3>{fam.name}</h3>")
        if table.empty:
            parts.append(f"<p>No {fam.name} results on this machine.</p>")
        else:
            flagged = table[table.verdict.isin(["over budget", "failed"])]
            if len(flagged):
                names = ", ".join(f"{r.variant}/{r.implementation} @ {r.shape} ({r.verdict})" for r in flagged.itertuples())
                parts.append(f'<p class="flagged">Flagged: {html.escape(names)}</p>')
            benchmark = next((b for b in benchmarks if b.startswith(f"bench_{fam.name}.")
                              and b.endswith("Forward.time_forward")), "")
            variants = variant_table(table)
            if not variants.empty:
                parts.append("<h4>Per variant: its fastest fused implementation against the budget</h4>"
                             + _variant_html(variants))

            def ran_through(row, family=fam.name):
                return through.get((machine, row.commit), {}).get(
                    case_name(family, row.variant, row.implementation, row.shape), "")

            parts.append("<h4>Every implementation</h4>"
                         + _table_html(benchmark, table, machine, section["asv"], ran_through))
        absent = [v.name for v in fam.variants if table.empty or v.name not in set(table.variant)]
        if absent:
            parts.append(f"<p>Not measured at this commit on this machine: {html.escape(', '.join(absent))}.</p>")
        for kind, name in _plots(out, f"{section['id']}-{fam.name}", table, fam_times, marks).items():
            parts.append(f'<img src="{html.escape(name)}" alt="{fam.name} {kind} on {html.escape(section["title"])}">')
        factor = settings.regression_factor
        slower = [f"{s.case} at {s.commit[:8]} ({s.ratio:.2f}x)" for s in fam_steps if s.verdict == "slower"]
        unresolved = [f"{s.case} at {s.commit[:8]} ({s.ratio:.2f}x, {s.verdict})" for s in fam_steps
                      if s.verdict != "slower" and s.ratio > factor]
        if slower:
            parts.append(f"<p>Regressions in the history (slower than the previous measurement as the gate decides: "
                         f"significant against the samples' noise, not significantly under {factor:.2f}x): "
                         f"{html.escape(', '.join(slower))}</p>")
        if unresolved:
            parts.append(f"<p>Steps over {factor:.2f}x that are not significant against their noise (not marked): "
                         f"{html.escape(', '.join(unresolved))}</p>")
    return "".join(parts) + "</section>"


def _swap(new: Path, target: Path):
    """Put the folder `new` where `target` is; the old one goes only once the new one is in place."""
    old = new.with_name(new.name + "-old")
    if target.exists():
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        if old.exists():
            old.rename(target)
        raise
    if old.exists():
        shutil.rmtree(old)


def build(root: Path, results_dir: Path, html_dir: Path, settings, *, with_asv=True) -> Path:
    """Write the site; returns the summary page's path. Raises ReportError or results.BadResults.
    The new site (with_asv=False: the summary folder) is built beside the old one and replaces it
    only once complete: a failure leaves the previous site as it was, and nothing else behind."""
    history = load(results_dir)
    if with_asv:
        _check_asv_inputs(results_dir)
    outside = hist.outside_suite(results_dir)
    through = choices.recorded(results_dir)
    # asv publish empties its html_dir before it reads anything: over the old site, a truncated
    # machine.json left 14 of its 102 files, a truncated benchmarks.json none. So the site is built
    # beside it, then swapped in.
    target = html_dir if with_asv else html_dir / SUMMARY_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp's 0o700 would become the site's
        out = staging / SUMMARY_DIR if with_asv else staging
        if with_asv:
            publish_asv(root, results_dir, staging)
        out.mkdir(exist_ok=True)
        catalog = "".join(f"<li><b>{fam.name}</b>: " + ", ".join(html.escape(v.name) for v in fam.variants)
                          + "</li>" for fam in families())
        (out / "index.html").write_text(
            "<!doctype html><html><head><meta charset=utf-8><title>variantbench report</title>"
            f"<style>{STYLE}</style></head><body><h1>variantbench report</h1>"
            f"<p>Every variant against its family baseline and its signal budget (default {settings.budget:.2f}x), "
            "per machine. Rows over budget or failed come first. The history link opens asv's graph of that "
            f'case; <a href="../index.html">asv\'s full history</a>.</p><ul>{catalog}</ul>'
            + "".join(_section_html(out, section, history.benchmark.unique(), settings, outside, through)
                      for section in hist.histories(history))
            + "</body></html>")
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return html_dir / SUMMARY_DIR / "index.html"


def export(results_dir: Path, path: Path):
    """The tidy history table (one row per benchmark, parameter set, commit, machine; identity
    columns) as CSV or Parquet, by the file's suffix. Written aside and renamed: a failure (no
    results, no pyarrow, a full disk) leaves an existing file as it was."""
    if path.suffix not in (".csv", ".parquet"):
        raise ReportError(f"{path}: write .csv or .parquet")
    frame = load(results_dir)
    frame = frame.assign(params=frame.params.map("/".join),
                         samples=frame.samples.map(lambda s: None if s is None else json.dumps(list(s))))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    except ImportError:
        raise ReportError("Parquet needs pyarrow (pip install pyarrow); or write .csv") from None
    finally:
        tmp.unlink(missing_ok=True)  # a partial file of a failed write; gone after the rename
    return len(frame)
