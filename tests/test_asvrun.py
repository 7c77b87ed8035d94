"""A killed or failed asv invocation never leaves a half-written results file behind."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from variantbench import asvrun, results

ROOT = Path(__file__).resolve().parent.parent


def results_json(value):
    return json.dumps({
        "commit_hash": "abc", "params": {"machine": "m"}, "result_columns": ["result", "params"],
        "results": {"bench_attention.AttentionForward.time_forward": [[value], [["'causal'"]]]},
    })


def test_publish_replaces_the_target_atomically(tmp_path):
    staged, target = tmp_path / "staged.json", tmp_path / "out" / "abc-existing.json"
    staged.write_text(results_json(0.001))
    asvrun.publish(staged, target)
    assert results.load_file(target).value.tolist() == [0.001]
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary left behind


def test_a_torn_staged_file_is_not_published_and_the_last_good_one_stays(tmp_path):
    target = tmp_path / "abc-existing.json"
    target.write_text(results_json(0.001))
    staged = tmp_path / "staged" / "abc-existing.json"
    staged.parent.mkdir()
    staged.write_text(results_json(0.002)[:60])  # what a kill during asv's write leaves
    with pytest.raises(results.BadResults):
        asvrun.publish(staged, target)
    assert results.load_file(target).value.tolist() == [0.001]


def test_each_timed_benchmark_is_its_own_invocation_and_the_tracks_share_the_last():
    names = asvrun.suite_benchmarks(ROOT)
    assert "bench_attention.AttentionForward.time_forward" in names
    groups = asvrun.chunks(names)
    assert sorted(n for g in groups for n in g) == names
    *timed, tracks = groups
    assert all(len(g) == 1 and ".time_" in g[0] for g in timed)
    assert tracks and all(".track_" in n for n in tracks)
    assert "bench_moe.MoEPeakMemory.track_peak_memory" in tracks
    assert asvrun.chunks([n for n in names if ".time_" in n]) == [[n] for n in names if ".time_" in n]


def test_our_benchmark_list_is_asvs_own_discovery():
    """run shards by this list: a name asv does not know would be an empty asv invocation, and one it
    knows that we miss would never run (the shared suite base classes are abstract, a subclass may
    drop an inherited track by setting it to None)."""
    from asv_runner.discovery import disc_benchmarks

    root = Path(__file__).resolve().parent.parent
    assert asvrun.suite_benchmarks(root) == sorted(b.name for b in disc_benchmarks(str(root / "suite")))


def test_a_selection_of_timings_keeps_the_tracks_of_their_power_state():
    """A `--bench` of timings alone once left a gate with no clocks (session 19): the tracks that read
    what those timings' processes recorded come with them, those of other timings do not."""
    from variantbench import runner
    from variantbench.catalog import family

    moe = set(runner.benchmarks_to_run(r"MoEForward\.time", [family("moe")], quick=False))
    assert {"bench_moe.MoEForward.time_forward", "bench_moe.MoEForwardPower.track_sm_clock_mhz",
            "bench_moe.MoETimingMode.track_cuda_graph"} <= moe
    assert not any("Metrics" in name or "PeakMemory" in name for name in moe)
    backward = runner.benchmarks_to_run(r"AttentionForwardBackward\.time", [family("attention")], quick=False)
    assert "bench_attention.AttentionForwardBackwardPower.track_sm_clock_mhz" in backward
    assert "bench_attention.AttentionForwardPower.track_sm_clock_mhz" not in backward  # the forward's


SLOW_ASV = """#!/bin/sh
# A stand-in for asv that starts a benchmark process and works until killed.
sleep 300 &
echo "$$ $!" > "$MARKER"
wait
"""

RUN = """
import sys
from pathlib import Path
from variantbench import asvrun
asvrun.run_staged(Path(sys.argv[1]), Path(sys.argv[2]), "m", "abc12345", [], ["bench_x.X.time_x"], None,
                  follow=lambda process: process.wait())
"""


def _alive(pid):
    """False once the process is gone or a zombie (nothing reaps an orphan in some containers)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_killed_run_stops_asv_and_leaves_no_staging_folder(tmp_path, sig):
    """A CI timeout (SIGTERM) or Ctrl-C (SIGINT) mid-run: the staging folder goes, and asv and the
    benchmark process it started go with the run instead of outliving it."""
    bin_dir, tmp_dir = tmp_path / "bin", tmp_path / "tmp"
    bin_dir.mkdir()
    tmp_dir.mkdir()
    (bin_dir / "asv").write_text(SLOW_ASV)
    (bin_dir / "asv").chmod(0o755)
    marker = tmp_path / "pids"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp_dir), MARKER=str(marker))
    with open(tmp_path / "stderr", "w") as stderr:  # not a pipe: a surviving asv would hold it open
        run = subprocess.Popen([sys.executable, "-c", RUN, str(ROOT), str(tmp_path / "results")], env=env,
                               stderr=stderr)
    pids = []
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [int(pid) for pid in marker.read_text().split()]  # asv, and the benchmark process it started
        assert [p.name for p in tmp_dir.iterdir()][0].startswith("variantbench-staging-")
        run.send_signal(sig)
        assert run.wait(timeout=60) != 0
        assert list(tmp_dir.iterdir()) == [], (tmp_path / "stderr").read_text()
        assert [pid for pid in pids if _alive(pid)] == []
    finally:  # a failing run must not leave its processes behind either
        run.kill()
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_two_runs_of_one_commit_publishing_into_one_folder_keep_each_others_benchmarks(tmp_path):
    """Lanes of one GPU host ran the default tier and the block forwards of one commit at once: each
    staged the results file as it was when it started, and the last to publish dropped the other's."""
    columns = ["result", "params", "started_at"]

    def run(started, **benchmarks):
        return {"commit_hash": "abc", "params": {"machine": "m"}, "result_columns": columns,
                "results": {f"bench_{name}.X.time_x": [[value], [["'v'"]], started] for name, value in benchmarks.items()}}

    target = tmp_path / "m" / "abc-existing.json"
    staged = tmp_path / "staged.json"
    staged.write_text(json.dumps(run(100, attention=1.0, moe=2.0)))
    asvrun.publish(staged, target)
    staged.write_text(json.dumps(run(50, block=3.0, moe=9.0)))  # began before the first one's moe ran
    asvrun.publish(staged, target)
    published = json.loads(target.read_text())["results"]
    assert {name: entry[0][0] for name, entry in published.items()} == {
        "bench_attention.X.time_x": 1.0, "bench_block.X.time_x": 3.0, "bench_moe.X.time_x": 2.0}
    staged.write_text(json.dumps(run(200, moe=4.0)))  # measured again later: it replaces
    asvrun.publish(staged, target)
    assert json.loads(target.read_text())["results"]["bench_moe.X.time_x"][0][0] == 4.0
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_lanes_timing_one_benchmark_over_different_parameters_keep_each_others_combinations(tmp_path):
    """57a9be4 on an H200: the default tier timed llama-3-8b's block forward while another lane timed all
    the recipes; asv's entry holds the whole grid (skipped combinations as NaN, failed as null), and the
    default tier, publishing last, nulled the other lane's figures for every other recipe."""
    columns = ["result", "params", "version", "started_at", "duration", "stats_q_25", "samples"]
    grid = [["'llama'", "'gemma'", "'qwen'"], ["'fused'"]]

    def run(started, llama, gemma, qwen):
        values = [llama, gemma, qwen]
        return {"commit_hash": "abc", "params": {"machine": "m"}, "result_columns": columns,
                "results": {"bench_block.B.time_forward": [
                    values, grid, "v1", started, 5.0, [v and v * 0.9 for v in values], [v and [v] for v in values]]}}

    target = tmp_path / "m" / "abc-existing.json"
    staged = tmp_path / "staged.json"
    staged.write_text(json.dumps(run(100, 12.0, 15.0, None)))  # every recipe; qwen failed
    asvrun.publish(staged, target)
    staged.write_text(json.dumps(run(300, 12.5, float("nan"), float("nan"))))  # the tier's one recipe, later
    asvrun.publish(staged, target)
    entry = json.loads(target.read_text())["results"]["bench_block.B.time_forward"]
    result, params, version, started, duration, q25, samples = entry
    assert params == grid and started == 300
    assert result[:2] == [12.5, 15.0] and result[2] != result[2]  # measured last, kept, the newer skip
    assert q25[:2] == [12.5 * 0.9, 15.0 * 0.9] and samples[:2] == [[12.5], [15.0]]
    # a grid grown by a parameter value joins value by value
    wider = run(400, 11.0, None, None)
    wider["results"]["bench_block.B.time_forward"][1] = [["'llama'", "'mixtral'"], ["'fused'"]]
    for column in (0, 5, 6):
        wider["results"]["bench_block.B.time_forward"][column] = [11.0, 20.0] if column == 0 else [None, None]
    staged.write_text(json.dumps(wider))
    asvrun.publish(staged, target)
    entry = json.loads(target.read_text())["results"]["bench_block.B.time_forward"]
    assert entry[1] == [["'llama'", "'mixtral'", "'gemma'", "'qwen'"], ["'fused'"]]
    assert entry[0][:3] == [11.0, 20.0, 15.0]
