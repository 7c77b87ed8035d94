"""The report and export when something is wrong: bad or missing results, a benchmarks.json or
machine.json torn mid-write, a failing write. One line, exit 2, and nothing already written lost:
the previous site and the output file stay byte for byte."""

import hashlib
import shutil
from pathlib import Path

import pytest

from test_report import ROOT, _commits, _make_history
from variantbench import gate, report


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """test_report.py's synthetic history of four commits, built for this module."""
    commits = _commits(4)
    return _make_history(tmp_path_factory.mktemp("results"), commits), commits


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


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _truncate(path):
    path.write_text(path.read_text()[:40])


@pytest.mark.parametrize("damage, with_asv", [("benchmarks.json", True), ("machine.json", True), ("summary", True),
                                              ("summary", False)])
def test_a_failed_report_keeps_the_previous_site(history, tmp_path, monkeypatch, damage, with_asv):
    """asv publish empties its html folder before it reads anything: a truncated machine.json took
    the committed history's site from 102 files to 14, a truncated benchmarks.json to none. Every
    failure leaves the previous site byte for byte, and no other folder."""
    folder = tmp_path / "results"
    shutil.copytree(history[0], folder)
    sites = tmp_path / "sites"
    html_dir = sites / "html"
    settings = gate.load_settings(ROOT / "pyproject.toml")
    report.build(ROOT, folder, html_dir, settings)
    before = _snapshot(html_dir)
    assert len(before) > 20
    if damage == "benchmarks.json":
        _truncate(folder / "benchmarks.json")
    elif damage == "machine.json":
        _truncate(folder / "h100" / "machine.json")
    else:
        def broken(*args):
            raise RuntimeError("a plot that cannot be drawn")

        monkeypatch.setattr(report, "_plots", broken)
    with pytest.raises(RuntimeError if damage == "summary" else report.ReportError):
        report.build(ROOT, folder, html_dir, settings, with_asv=with_asv)
    assert _snapshot(html_dir) == before
    assert [p.name for p in sites.iterdir()] == ["html"]


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_benchmarks_json_failure_names_the_file_and_our_command(history, tmp_path, damage):
    from click.testing import CliRunner

    from variantbench.cli import main

    folder = tmp_path / "results"
    shutil.copytree(history[0], folder)
    listing = folder / "benchmarks.json"
    if damage == "missing":
        listing.unlink()
    else:
        _truncate(listing)
    with pytest.raises(report.ReportError) as failure:
        report.build(ROOT, folder, tmp_path / "html", gate.load_settings(ROOT / "pyproject.toml"))
    message = str(failure.value)
    assert str(listing) in message and "`variantbench run`" in message and "asv run" not in message
    cli = CliRunner().invoke(main, ["report", "--results", str(folder), "--html", str(tmp_path / "html")])
    assert cli.exit_code == 2 and str(listing) in cli.output and len(cli.output.strip().splitlines()) == 1
    if damage == "truncated":  # the summary alone reads it too: which results asv would leave out
        cli = CliRunner().invoke(main, ["report", "--no-asv", "--results", str(folder), "--html", str(tmp_path / "h")])
        assert cli.exit_code == 2 and str(listing) in cli.output and len(cli.output.strip().splitlines()) == 1


@pytest.mark.parametrize("results", ["missing", "empty"])
def test_export_without_results_fails_and_keeps_the_file(tmp_path, results):
    from click.testing import CliRunner

    from variantbench.cli import main

    folder = tmp_path / "results"
    if results == "empty":
        (folder / "h100").mkdir(parents=True)
    keep = tmp_path / "keep.csv"
    keep.write_text("benchmark,params\nbench_attention.AttentionForward.time_forward,gqa_8/sdpa\n")
    before = keep.read_bytes()
    with pytest.raises(report.ReportError, match="no results"):
        report.export(folder, keep)
    cli = CliRunner().invoke(main, ["export", "--results", str(folder), "-o", str(keep)])
    assert cli.exit_code == 2 and "no results" in cli.output and len(cli.output.strip().splitlines()) == 1
    assert keep.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv"] + (
        ["results"] if results == "empty" else [])


def test_a_failed_export_write_keeps_the_file(history, tmp_path, monkeypatch):
    import pandas as pd

    keep = tmp_path / "keep.csv"
    keep.write_text("an earlier export\n")

    def disk_full(self, path, **kwargs):
        Path(path).write_text("benchmark,par")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError):
        report.export(history[0], keep)
    assert keep.read_text() == "an earlier export\n" and [p.name for p in tmp_path.iterdir()] == ["keep.csv"]
