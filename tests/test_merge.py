"""`variantbench merge`: shards of one commit's run (disjoint families, as the nightly matrix runs
them) join into the one results file the unsharded run writes; anything that is not one commit's
run on one machine, or a benchmark in two shards, is refused with one line and nothing written."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from variantbench.cli import main
from variantbench.results import load_file

RECORDED = Path(__file__).resolve().parent.parent / "reports" / "results" / "nvidia-h200"
RUN = sorted(RECORDED.glob("5bd47a9c-*.json"))[0]


def shard(root, name, keep):
    """A shard folder holding RUN's benchmarks for which keep(name) is true."""
    folder = root / name / "nvidia-h200"
    folder.mkdir(parents=True)
    shutil.copy(RECORDED / "machine.json", folder / "machine.json")
    data = json.loads(RUN.read_text())
    data["results"] = {k: v for k, v in data["results"].items() if keep(k)}
    (folder / RUN.name).write_text(json.dumps(data))
    return root / name


def by_family(family):
    return lambda benchmark: benchmark.startswith(f"bench_{family}.")


def merge(*args):
    return CliRunner().invoke(main, ["merge", *map(str, args)])


def test_family_shards_join_into_the_unsharded_runs_file(tmp_path):
    attention = shard(tmp_path, "attention", by_family("attention"))
    moe = shard(tmp_path, "moe", by_family("moe"))
    result = merge(attention, moe, "--into", tmp_path / "results")
    assert result.exit_code == 0, result.output
    assert "2 shard(s)" in result.output
    merged = tmp_path / "results" / "nvidia-h200" / RUN.name
    assert json.loads(merged.read_text())["results"] == json.loads(RUN.read_text())["results"]
    assert len(load_file(merged)) == len(load_file(RUN))
    assert (tmp_path / "results" / "nvidia-h200" / "machine.json").exists()


def test_a_shard_joins_a_commit_already_in_the_results(tmp_path):
    into = tmp_path / "results"
    assert merge(shard(tmp_path, "attention", by_family("attention")), "--into", into).exit_code == 0
    assert merge(shard(tmp_path, "moe", by_family("moe")), "--into", into).exit_code == 0
    assert json.loads((into / "nvidia-h200" / RUN.name).read_text())["results"] == json.loads(RUN.read_text())["results"]


def test_a_benchmark_in_two_shards_is_refused_and_nothing_written(tmp_path):
    one = shard(tmp_path, "one", by_family("attention"))
    two = shard(tmp_path, "two", lambda b: True)
    path = two / "nvidia-h200" / RUN.name
    data = json.loads(path.read_text())  # the same benchmark measured again: another figure
    data["results"]["bench_attention.AttentionForward.time_forward"][3] = "2026-11-28 other run"
    path.write_text(json.dumps(data))
    result = merge(one, two, "--into", tmp_path / "results")
    assert result.exit_code == 2
    assert "shards must run disjoint benchmarks" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("field,key,value", [("commit_hash", None, "0" * 40), ("params", "torch", "2.99"),
                                             ("params", "gpu", "NVIDIA H100")])
def test_shards_of_another_commit_or_software_are_refused(tmp_path, field, key, value):
    one = shard(tmp_path, "one", by_family("attention"))
    two = shard(tmp_path, "two", by_family("moe"))
    path = two / "nvidia-h200" / RUN.name
    data = json.loads(path.read_text())
    if key:
        data[field][key] = value
    else:
        data[field] = value
    path.write_text(json.dumps(data))
    result = merge(one, two, "--into", tmp_path / "results")
    assert result.exit_code == 2 and f"differ in {field}" in result.output


def test_two_runners_of_one_gpu_model_share_a_history(tmp_path):
    one = shard(tmp_path, "one", by_family("attention"))
    two = shard(tmp_path, "two", by_family("moe"))
    path = two / "nvidia-h200" / RUN.name
    data = json.loads(path.read_text())
    data["params"].update(num_cpu="128", ram="999999")  # another host of the same GPU and software
    path.write_text(json.dumps(data))
    assert merge(one, two, "--into", tmp_path / "results").exit_code == 0


def test_a_retried_shard_merges_again_as_a_no_op(tmp_path):
    into = tmp_path / "results"
    attention = shard(tmp_path, "attention", by_family("attention"))
    assert merge(attention, "--into", into).exit_code == 0
    assert merge(attention, "--into", into).exit_code == 0


def test_an_empty_shard_is_refused_rather_than_a_family_silently_missing(tmp_path):
    (tmp_path / "empty" / "nvidia-h200").mkdir(parents=True)
    result = merge(shard(tmp_path, "attention", by_family("attention")), tmp_path / "empty", "--into", tmp_path / "r")
    assert result.exit_code == 2 and "no asv result files" in result.output
    assert not (tmp_path / "r").exists()


def test_a_truncated_shard_fails_with_one_line_and_the_results_stay(tmp_path):
    into = tmp_path / "results"
    assert merge(shard(tmp_path, "attention", by_family("attention")), "--into", into).exit_code == 0
    before = (into / "nvidia-h200" / RUN.name).read_text()
    broken = shard(tmp_path, "moe", by_family("moe"))
    path = broken / "nvidia-h200" / RUN.name
    path.write_text(path.read_text()[:300])
    result = merge(broken, "--into", into)
    assert result.exit_code == 2 and "not a readable asv results file" in result.output
    assert (into / "nvidia-h200" / RUN.name).read_text() == before


def test_a_missing_shard_folder_is_one_line(tmp_path):
    result = merge("/nonexistent/shard", "--into", tmp_path / "results")
    assert result.exit_code == 2 and "no such shard folder" in result.output
