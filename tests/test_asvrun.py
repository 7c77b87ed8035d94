"""A killed or failed asv invocation never leaves a half-written results file behind."""

import json
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
