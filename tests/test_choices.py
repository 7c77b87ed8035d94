"""Which backend each timed case ran through, kept beside its asv results (variantbench.choices):
gathered from a run's metrics memos, joined with earlier runs of the commit, carried by the shard
merge, and invisible to asv (which reads every .json under the results as a result file)."""

import json
import shutil

from test_merge import RECORDED, RUN, by_family, merge, shard
from variantbench import choices, metrics


def memo(run_dir, case, backend):
    metrics.write_memo(metrics.memo_path(case, run_dir), {"case": case, "sdpa_backend": backend, "ms": 1.0})


def test_a_run_records_each_cases_backend_beside_its_results_and_keeps_the_earlier_runs(tmp_path):
    results = tmp_path / "results" / "nvidia-h200"
    results.mkdir(parents=True)
    results_file = results / RUN.name
    shutil.copy(RUN, results_file)
    first, second = tmp_path / "run1", tmp_path / "run2"
    memo(first, "block/llama-3-8b/fused/prefill-b4-s4k", "attention sdpa, mlp cublas")
    memo(first, "attention/gqa_8/sdpa/llama-3-8b-s4k", "CUDNN_ATTENTION")
    memo(first, "attention/gqa_8/triton/llama-3-8b-s4k", None)  # ours names no backend: not recorded
    (first / "metrics-cut.json").write_text('{"case": "attention/causal')  # a memo cut by a crash
    path = choices.record(first, results_file)
    assert path == results / (RUN.stem + ".choices")
    assert choices.read(path) == {"attention/gqa_8/sdpa/llama-3-8b-s4k": "CUDNN_ATTENTION",
                                  "block/llama-3-8b/fused/prefill-b4-s4k": "attention sdpa, mlp cublas"}
    # a later lane of the commit: its cases join, and where it names a case too, its choice stands
    memo(second, "block/llama-3-8b/fused/prefill-b4-s4k", "attention triton, mlp cublas")
    memo(second, "moe/softmax_topk/grouped_mm/mixtral-8x7b-decode-t16-zipf", "grouped_mm")
    choices.record(second, results_file)
    assert choices.read(path) == {"attention/gqa_8/sdpa/llama-3-8b-s4k": "CUDNN_ATTENTION",
                                  "block/llama-3-8b/fused/prefill-b4-s4k": "attention triton, mlp cublas",
                                  "moe/softmax_topk/grouped_mm/mixtral-8x7b-decode-t16-zipf": "grouped_mm"}
    assert choices.record(tmp_path / "empty", results_file) is None  # nothing named: nothing written


def test_asv_reads_no_choices_file_as_results(tmp_path):
    from asv.results import iter_results_paths

    results = tmp_path / "results" / "nvidia-h200"
    results.mkdir(parents=True)
    shutil.copy(RECORDED / "machine.json", results / "machine.json")
    shutil.copy(RUN, results / RUN.name)
    choices.path_for(results / RUN.name).write_text(json.dumps({"a/b/c/d": "x"}))
    assert [name for _, name, _ in iter_results_paths(str(tmp_path / "results"))] == [RUN.name]


def test_the_shard_merge_carries_every_shards_choices(tmp_path):
    attention = shard(tmp_path, "attention", by_family("attention"))
    moe = shard(tmp_path, "moe", by_family("moe"))
    for folder, case, backend in ((attention, "attention/gqa_8/sdpa/llama-3-8b-s4k", "CUDNN_ATTENTION"),
                                  (moe, "moe/softmax_topk/grouped_mm/mixtral-8x7b-decode-t16-zipf", "grouped_mm")):
        choices.path_for(folder / "nvidia-h200" / RUN.name).write_text(json.dumps({case: backend}))
    result = merge(attention, moe, "--into", tmp_path / "results")
    assert result.exit_code == 0, result.output
    assert choices.read(choices.path_for(tmp_path / "results" / "nvidia-h200" / RUN.name)) == {
        "attention/gqa_8/sdpa/llama-3-8b-s4k": "CUDNN_ATTENTION",
        "moe/softmax_topk/grouped_mm/mixtral-8x7b-decode-t16-zipf": "grouped_mm"}


def test_an_unreadable_choices_file_is_kept_aside_by_a_run_and_refused_by_the_merge(tmp_path, capsys):
    """A run keeps its results and sets a broken file aside (one line), losing nothing; the shard
    merge refuses it with one line and exit 2, writing nothing."""
    results = tmp_path / "results" / "nvidia-h200"
    results.mkdir(parents=True)
    target = choices.path_for(results / RUN.name)
    target.write_text('{"attention/gqa_8/sdpa/llama-3-8b-s4k": "CUDNN')  # cut by a crash
    run = tmp_path / "run"
    memo(run, "attention/causal/sdpa/llama-3-8b-s4k", "FLASH_ATTENTION")
    assert choices.record(run, results / RUN.name) == target
    assert choices.read(target) == {"attention/causal/sdpa/llama-3-8b-s4k": "FLASH_ATTENTION"}
    aside = target.with_name(target.name + ".unreadable")
    assert aside.read_text() == '{"attention/gqa_8/sdpa/llama-3-8b-s4k": "CUDNN'
    warning = capsys.readouterr().err.strip()
    assert len(warning.splitlines()) == 1 and "not readable as choices (JSONDecodeError)" in warning

    attention = shard(tmp_path, "attention", by_family("attention"))
    choices.path_for(attention / "nvidia-h200" / RUN.name).write_text("[1, 2]")
    into = tmp_path / "merged"
    result = merge(attention, "--into", into)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "not a JSON object of case: backend" in result.output and not into.exists()
