"""The CLI meets bad input with one clear line and its exit code, and checks on the CPU."""

import json

import pytest
from click.testing import CliRunner

from variantbench import results
from variantbench.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def one_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_unknown_variant_is_exit_2_one_line():
    result = invoke("check", "--variant", "sliding_window_999")
    assert result.exit_code == 2
    line = one_line(result)
    assert "unknown attention/" in line and "variant 'sliding_window_999'; known: causal" in line


def test_unknown_family_is_exit_2():
    result = invoke("list", "--family", "convolution")
    assert result.exit_code == 2
    assert "unknown family" in one_line(result)


def test_shape_of_another_device_is_exit_2():
    result = invoke("check", "--shape", "llama-3-70b-s16k", "--device", "cpu")
    assert result.exit_code == 2
    assert "belongs to the cuda grid" in one_line(result)


def test_missing_gpu_is_exit_2(monkeypatch):
    monkeypatch.delenv("VARIANTBENCH_DEVICE", raising=False)
    result = invoke("check", "--device", "cuda")
    assert result.exit_code == 2
    assert "no CUDA GPU" in one_line(result)


def test_list_shows_every_variant_and_the_baseline():
    result = invoke("list")
    assert result.exit_code == 0
    assert "baseline gqa_8 through sdpa" in result.output
    for name in ("causal", "mqa", "sliding_window_1024", "document", "softcap_50", "alibi", "prefix_lm", "full"):
        assert name in result.output


def test_check_passes_on_cpu_and_reports_skips():
    result = invoke("check", "--variant", "softcap_50", "--shape", "tiny-decode-kv256")
    assert result.exit_code == 0, result.output
    assert "skip      attention/softcap_50/sdpa" in result.output
    assert "3 passed, 0 mismatched, 0 errors" in result.output


def test_check_exits_1_naming_the_mismatch(monkeypatch):
    import kernels.attention.flex as flex

    real = flex.prepare

    def broken(variant, problem):
        call = real(variant, problem)
        return lambda: call() * 1.01

    monkeypatch.setattr(flex, "prepare", broken)
    result = invoke("check", "--variant", "gqa_8", "--implementation", "flex", "--shape", "tiny-s128")
    assert result.exit_code == 1
    assert "MISMATCH  attention/gqa_8/flex/tiny-s128" in result.output


@pytest.mark.parametrize("content", ['{"results": {', "", '{"version": 2}', "[]"])
def test_malformed_results_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "abc-existing.json"
    path.write_text(content)
    with pytest.raises(results.BadResults, match="not a readable asv results file"):
        results.load_file(path)


def test_results_file_loads_tidy_rows(tmp_path):
    data = {
        "commit_hash": "abc123", "params": {"machine": "m"},
        "result_columns": ["result", "params", "version", "stats_q_25", "stats_q_75"],
        "results": {"bench_attention.AttentionForward.time_forward": [
            [0.001, None], [["'causal'", "'mqa'"], ["'triton'"], ["'tiny-s128'"]], "v", [0.0009, None], [0.0011, None]]},
    }
    path = tmp_path / "abc123-existing.json"
    path.write_text(json.dumps(data))
    frame = results.load_file(path)
    assert list(frame.params) == [("causal", "triton", "tiny-s128"), ("mqa", "triton", "tiny-s128")]
    assert frame.value.iloc[0] == 0.001 and frame.value.isna().iloc[1]
    table = results.forward_tables(frame)["attention"]
    assert table.loc[("tiny-s128", "causal", "triton"), "ms"] == pytest.approx(1.0)


def test_run_on_cpu_records_results_outside_the_gpu_history_and_prints_the_table(tmp_path, monkeypatch):
    """End to end through asv: one case, quick. CPU results land in reports/cpu-results/, never in
    reports/results/ (the GPU history), and the forward table names the case."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    before = sorted(p.name for p in (root / "reports" / "results").rglob("*"))
    monkeypatch.setenv("HOME", str(tmp_path))  # asv's machine file goes to ~/.asv-machine.json
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = invoke("run", "--quick", "--device", "cpu", "--variant", "gqa_8", "--implementation", "sdpa")
    assert result.exit_code == 0, result.output
    assert "forward, cpu figures (reports/cpu-results/" in result.output
    assert "gqa_8" in result.output and "sdpa" in result.output
    assert "ready in" in result.output  # the live progress line of the prepared case
    assert sorted(p.name for p in (root / "reports" / "results").rglob("*")) == before


def test_check_names_the_sdpa_backend_that_ran():
    result = invoke("check", "--variant", "gqa_8", "--implementation", "sdpa", "--shape", "tiny-s128")
    assert result.exit_code == 0, result.output
    assert "attention/gqa_8/sdpa/tiny-s128" in result.output and " via " in result.output


def test_results_with_a_short_column_are_damaged(tmp_path):
    data = {
        "commit_hash": "abc", "params": {"machine": "m"}, "result_columns": ["result", "params"],
        "results": {"bench_attention.AttentionForward.time_forward": [[0.001], [["'causal'", "'mqa'"]]]},
    }
    path = tmp_path / "abc-existing.json"
    path.write_text(json.dumps(data))
    with pytest.raises(results.BadResults, match="not a readable asv results file"):
        results.load_file(path)


def test_run_refuses_to_record_another_commits_results():
    """Measuring the checked-out code under BASE's hash would poison every later comparison."""
    result = invoke("run", "--quick", "--device", "cpu", "--commit", "HEAD~1")
    assert result.exit_code == 2
    assert "is not the checked-out commit" in one_line(result)


def test_run_with_a_broken_bench_regex_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = invoke("run", "--quick", "--device", "cpu", "--bench", "time_forward(")
    assert result.exit_code == 2
    assert "not a regular expression" in result.output and "Traceback" not in result.output


def test_check_reports_a_crash_with_no_message_as_one_line(monkeypatch):
    import kernels.attention.flex as flex

    def crash(variant, problem):
        raise RuntimeError()

    monkeypatch.setattr(flex, "prepare", crash)
    result = invoke("check", "--variant", "gqa_8", "--implementation", "flex", "--shape", "tiny-s128")
    assert result.exit_code == 2
    assert "ERROR     attention/gqa_8/flex/tiny-s128: RuntimeError: (no message)" in result.output


def test_check_in_parallel_workers_runs_autotuning_kernels_alone_and_last():
    """--jobs spawns worker processes (the path a GPU runner takes); the Triton kernel, which autotunes,
    is prepared after the others so no other process's kernels disturb its config timings."""
    result = invoke("check", "--jobs", "2", "--variant", "gqa_8", "--shape", "tiny-s128")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "attention/gqa_8/" in line]
    assert len(lines) == 4 and all(" ok " in line for line in lines), result.output
    assert "/triton/" in lines[-1]
    assert "4 passed, 0 mismatched, 0 errors" in result.output


def test_check_reports_a_dead_worker_as_one_line_per_case(monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from variantbench import cases

    class DeadPool:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, key, backward):
            from concurrent.futures import Future

            future = Future()
            future.set_exception(BrokenProcessPool("gone"))
            return future

    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", DeadPool)
    checked = cases.check_many(list(c for c in cases.iter_cases("attention", "cpu", variants=["gqa_8"],
                                                                 implementations=["sdpa"], shapes=["tiny-s128"])),
                               jobs=2, report=lambda r: None)
    assert [r.status for r in checked] == ["error"]
    assert "a worker process died" in checked[0].line


def test_a_case_out_of_memory_beside_others_is_retried_alone(monkeypatch):
    from concurrent.futures import Future

    from variantbench import cases

    calls = []

    class Pool:
        def __init__(self, max_workers, mp_context):
            self.workers = max_workers

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, key, backward):
            calls.append((self.workers, key[2]))
            future = Future()
            oom = self.workers > 1 and key[2] == "flex"
            future.set_result(cases.CheckResult("/".join(key), "error" if oom else "ok", "line", out_of_memory=oom))
            return future

    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", Pool)
    selected = [c for c in cases.iter_cases("attention", "cpu", variants=["gqa_8"], shapes=["tiny-s128"],
                                            implementations=["sdpa", "flex"])]
    checked = cases.check_many(selected, jobs=4, report=lambda r: None)
    assert [r.status for r in checked] == ["ok", "ok"]
    assert calls[-1] == (1, "flex")  # the OOM case ran again, alone


def test_run_leaves_out_a_family_with_nothing_to_run_here_saying_why(monkeypatch, capsys):
    from variantbench.catalog import family
    from variantbench.cli import _families_with_cases

    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    kept = _families_with_cases([family("attention"), family("comms")], "cuda", (), (), (), "default")
    assert [f.name for f in kept] == ["attention"]
    assert "comms: nothing runs here (a collective needs 2 or more GPUs; this machine has 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        _families_with_cases([family("comms")], "cuda", (), (), (), "default")
    assert exit_info.value.code == 2
