"""The history: the version migration (in a scratch git repository, and on the committed results),
which results form one history, and which steps in it are regressions."""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from variantbench import history, results

ROOT = Path(__file__).resolve().parent.parent
FORWARD = "bench_attention.AttentionForward.time_forward"
ERROR = "bench_attention.AttentionMetrics.track_max_error"
TFLOPS = "bench_attention.AttentionMetrics.track_tflops"
BACKWARD = "bench_attention.AttentionForwardBackward.time_forward_backward"
GONE = "bench_attention.AttentionGone.time_gone"
HASH = "854e9130dfc7d40e" * 4  # asv's default version: a sha256 of the source
COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
           "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """Three commits, oldest first."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    commits = []
    for i in range(3):
        _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", f"c{i}")
        commits.append(_git(repo, "rev-parse", "HEAD"))
    return repo, commits


def _write(folder, commit, versions, machine="h100"):
    """One asv results file (compact JSON, as asv writes it) with one result per benchmark."""
    data = {"commit_hash": commit, "env_name": "existing-py", "date": 1_700_000_000_000,
            "params": {"machine": machine, "gpu": "NVIDIA H100 80GB HBM3"}, "python": "python3",
            "requirements": {}, "env_vars": {}, "result_columns": COLUMNS,
            "results": {name: [[1.0e-3], [["'gqa_8'"], ["'sdpa'"], ["'s4k'"]], version, 0, 1.0, None, None,
                               [0.99e-3], [1.01e-3], [1], [10]] for name, version in versions.items()},
            "durations": {}, "version": 2}
    path = folder / machine / f"{commit[:8]}-existing-py.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _listing(folder, versions):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "benchmarks.json").write_text(json.dumps(
        {**{name: {"name": name, "version": v} for name, v in versions.items()}, "version": 2}))


def test_migrate_rewrites_only_results_that_mean_the_same(repo, tmp_path):
    repo, (c0, c1, c2) = repo
    since = {"time_forward": c1, "track_max_error": None, "time_forward_backward": c1, "track_tflops": c1}
    folder = tmp_path / "results"
    _listing(folder, {FORWARD: "1", ERROR: "1", BACKWARD: "2", TFLOPS: "1"})
    old = _write(folder, c0, {FORWARD: HASH, ERROR: HASH, GONE: HASH})
    at = _write(folder, c1, {FORWARD: HASH, BACKWARD: HASH, TFLOPS: "0"})
    after = _write(folder, c2, {FORWARD: HASH, ERROR: "1"})
    unknown = _write(folder, "f" * 40, {FORWARD: HASH})
    before = {p: p.read_text() for p in (old, at, after, unknown)}

    decisions = {(d.path, d.benchmark): d.why for d in history.migrate(folder, repo, since)}
    assert decisions == {
        (old, FORWARD): f"measured before {c1[:7]}",
        (old, ERROR): "migrated",  # times nothing: every commit
        (old, GONE): "not in the suite's benchmarks.json",
        (at, FORWARD): "migrated",
        (at, BACKWARD): "the suite's version is '2', not '1': a meaning no older result has",
        (at, TFLOPS): "declared version '0': a changed meaning, kept apart",
        (after, FORWARD): "migrated",
        (unknown, FORWARD): "commit or cutoff unknown to git",
    }

    def versions(path):
        return {name: entry[2] for name, entry in json.loads(path.read_text())["results"].items()}

    assert versions(old) == {FORWARD: HASH, ERROR: "1", GONE: HASH}
    assert versions(at) == {FORWARD: "1", BACKWARD: HASH, TFLOPS: "0"}
    assert versions(after) == {FORWARD: "1", ERROR: "1"}
    assert unknown.read_text() == before[unknown]
    # every other byte as it was
    assert at.read_text() == before[at].replace(f'"{HASH}"', '"1"', 1)
    assert [d for d in history.migrate(folder, repo, since) if d.migrated] == []  # idempotent
    assert history.outside_suite(folder) == {
        ("h100", c0, FORWARD), ("h100", c0, GONE), ("h100", c1, BACKWARD), ("h100", c1, TFLOPS),
        ("h100", "f" * 40, FORWARD)}


def _descends_from(commit, ancestor):
    return subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, commit], cwd=ROOT).returncode == 0


def _project_commits(*short):
    try:
        return [_git(ROOT, "rev-parse", f"{c}^{{commit}}") for c in short]
    except subprocess.CalledProcessError:
        pytest.skip("needs the project's git history (a shallow clone lacks its early commits)")


def test_migrate_command_on_the_project_history(tmp_path):
    """125b362 timed one synchronised call per sample, edacf1b batches: only edacf1b's joins."""
    before, after = _project_commits("125b362", "edacf1b")
    folder = tmp_path / "results"
    _listing(folder, {FORWARD: "1"})
    old, new = _write(folder, before, {FORWARD: HASH}), _write(folder, after, {FORWARD: HASH})
    runner = CliRunner()
    dry = runner.invoke(history.main, ["migrate", "--dry-run", str(folder)])
    assert dry.exit_code == 0 and dry.output.splitlines() == [
        f"h100/{before[:8]}-existing-py.json: 0 to migrate, 1 kept (time_forward: measured before 84901ab)",
        f"h100/{after[:8]}-existing-py.json: 1 to migrate, 0 kept"]
    assert HASH in new.read_text()
    assert runner.invoke(history.main, ["migrate", str(folder)]).exit_code == 0
    assert HASH in old.read_text() and HASH not in new.read_text()
    (folder / "benchmarks.json").write_text('{"bench')
    broken = runner.invoke(history.main, ["migrate", str(folder)])
    assert broken.exit_code == 2 and len(broken.output.strip().splitlines()) == 1
    assert "benchmarks.json: not readable JSON (Unterminated string" in broken.output


def test_committed_history_is_whole():
    """reports/results after the migration: nothing left to migrate; the time figures of e64b5e2,
    fbc3c4e and 125b362 (one synchronised call per sample) stay out of every graph, and so does every
    MoE forward before 3144ca8 (its zipf shapes were timed near uniform: the MoE benchmarks' versions
    moved on); every other time figure from 84901ab on is in."""
    _project_commits(history.TIMER, "3144ca8")
    folder = ROOT / "reports" / "results"
    assert [d for d in history.plan(folder) if d.migrated] == []
    outside = history.outside_suite(folder)
    timed = {(m, c[:7]) for m, c, b in outside if ".time_" in b and "MoE" not in b}
    assert timed == {("nvidia-h100-80gb-hbm3", c) for c in ("e64b5e2", "fbc3c4e", "125b362")}
    moe = {(m, c[:7]) for m, c, b in outside if b == "bench_moe.MoEForward.time_forward"}
    measured = {(path.parent.name, path.name[:7]) for path in folder.glob("*/*.json")
                if path.name != "machine.json" and "MoEForward.time_forward" in path.read_text()}
    load_fixed = {(m, c) for m, c in measured if _descends_from(c, "3144ca8")}
    assert load_fixed and moe == measured - load_fixed
    frame = results.load_history(folder)
    forward = frame[frame.benchmark.str.endswith("time_forward") & (frame.machine == "nvidia-h100-80gb-hbm3")]
    inside = forward[[(m, c, b) not in outside for m, c, b in zip(forward.machine, forward.commit, forward.benchmark)]]
    # every H100 commit with a forward from 84901ab on, but 074856b and af178c1: they timed MoE only
    assert inside.commit.nunique() == 8


def _rows(cases):
    """Forward rows of one machine: {case: [(commit, median ms, samples)]}, commits in date order."""
    rows = []
    for case, points in cases.items():
        for i, (commit, ms, samples) in enumerate(points):
            value = None if ms is None else ms * 1e-3
            rows.append({"benchmark": FORWARD, "params": (case, "sdpa", "s4k"), "value": value,
                         "q25": None, "q75": None, "repeat": 10, "samples": samples, "commit": commit,
                         "machine": "h100", "failed": ms is None, "date": pd.Timestamp(1_700_000_000 + i, unit="s")})
    return history.forward_rows(pd.DataFrame(rows))


def _samples(ms, spread):
    return tuple(ms * 1e-3 * (1 + spread * k / 4.5) for k in (-4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5))


def test_steps_are_decided_as_the_gate_decides():
    """1.12x with 0.3% noise: slower. 1.12x with 10% noise: noisy, not marked. 1.03x with 0.3%
    noise: significant but under the factor: same."""
    rows = _rows({
        "clean": [("a", 1.0, _samples(1.0, 0.003)), ("b", 1.12, _samples(1.12, 0.003))],
        "noisy": [("a", 1.0, _samples(1.0, 0.10)), ("b", 1.12, _samples(1.12, 0.10))],
        "small": [("a", 1.0, _samples(1.0, 0.003)), ("b", 1.03, _samples(1.03, 0.003))],
    })
    verdicts = {s.case.split("/")[1]: (s.verdict, round(s.ratio, 2)) for s in history.steps(rows, 1.10)}
    assert verdicts == {"clean": ("slower", 1.12), "noisy": ("noisy", 1.12), "small": ("same", 1.03)}


def test_a_failure_is_no_step_and_results_outside_the_suite_are_left_out():
    rows = _rows({"gqa_8": [("a", 1.0, _samples(1.0, 0.003)), ("b", None, None), ("c", 1.5, _samples(1.5, 0.003))]})
    steps = history.steps(rows, 1.10)
    assert [(s.commit, s.verdict) for s in steps] == [("c", "slower")]  # against a, the last measured
    kept = history.forward_rows(rows, outside={("h100", "a", FORWARD)})
    assert list(kept.commit) == ["b", "c"] and history.steps(kept, 1.10) == []


def test_one_history_per_machine_identity():
    identity = {"gpu": "NVIDIA H100 80GB HBM3", "gpu_count": "1", "driver": "580", "cuda": "13.0",
                "torch": "2.11.0", "triton": "3.6.0"}
    frame = pd.DataFrame([
        {"machine": "m", "commit": "a", "date": pd.Timestamp(1, unit="s"), **identity},
        {"machine": "m", "commit": "b", "date": pd.Timestamp(2, unit="s"), **identity, "gpu": "NVIDIA H200",
         "torch": "2.12.0"},
        {"machine": "n", "commit": "a", "date": pd.Timestamp(1, unit="s"), **identity, "gpu_count": None},
    ])
    found = history.histories(frame)
    assert [(h["title"], list(h["rows"].commit)) for h in found] == [
        ("m · gpu NVIDIA H100 80GB HBM3 · torch 2.11.0", ["a"]), ("m · gpu NVIDIA H200 · torch 2.12.0", ["b"]),
        ("n", ["a"])]
    assert "(gpu, torch differ)" in found[0]["note"] and found[2]["note"] == ""
    assert found[1]["asv"] == {"gpu": "NVIDIA H200", "torch": "2.12.0"}


def test_a_key_older_results_did_not_record_is_unknown_not_a_new_machine():
    """cuDNN and NCCL joined the identity in session 6: a file without them continues the history of
    the files with them on that machine, unless those disagree among themselves."""
    identity = {"gpu": "NVIDIA H200", "gpu_count": "1", "driver": "580", "cuda": "13.0", "torch": "2.11.0",
                "triton": "3.6.0"}
    frame = pd.DataFrame([
        {"machine": "m", "commit": "old", "date": pd.Timestamp(1, unit="s"), **identity},
        {"machine": "m", "commit": "new", "date": pd.Timestamp(2, unit="s"), **identity, "cudnn": "91002",
         "nccl": "2.28.9"},
    ])
    (one,) = history.histories(frame)
    assert list(one["rows"].commit) == ["old", "new"] and one["note"] == ""
    split = pd.concat([frame, pd.DataFrame([{"machine": "m", "commit": "newer", "date": pd.Timestamp(3, unit="s"),
                                             **identity, "cudnn": "91100", "nccl": "2.28.9"}])])
    assert len(history.histories(split)) == 3
