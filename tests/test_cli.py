"""The CLI meets bad input with one clear line and its exit code, and checks on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from variantbench import results
from variantbench.catalog import family
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
    assert "4 passed, 0 mismatched, 0 errors" in result.output  # reference, flex, triton, compiled


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


def test_the_forward_table_has_the_sm_clock_the_forward_ran_at(tmp_path):
    """The forward's own Power track, not forward+backward's (whose name ends the same way)."""
    params = [["'causal'", "'mqa'"], ["'triton'"], ["'s4k'"]]
    data = {
        "commit_hash": "abc123", "params": {"machine": "m"}, "result_columns": ["result", "params"],
        "results": {
            "bench_attention.AttentionForward.time_forward": [[0.001, 0.002], params],
            "bench_attention.AttentionForwardPower.track_sm_clock_mhz": [[1755.0, 1900.0], params],
            "bench_attention.AttentionForwardBackwardPower.track_sm_clock_mhz": [[1500.0, 1600.0], params],
        },
    }
    path = tmp_path / "abc123-existing.json"
    path.write_text(json.dumps(data))
    table = results.forward_tables(results.load_file(path))["attention"]
    assert list(table.columns) == ["ms", "MHz"]
    assert table["MHz"].tolist() == [1755.0, 1900.0]


def _tree(folder):
    """Every file under folder with its size and modification time: what a run must leave alone.
    (Not screenshots/: the report's browser tests write their synthetic screenshots there.)"""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).parts[0] != "screenshots"}


def test_run_on_cpu_writes_only_where_it_is_told_and_times_triton_through_the_interpreter(tmp_path, monkeypatch):
    """End to end through asv: one variant, quick, on the CPU. Results go to --results; nothing of the
    run lands in the checkout (its reports/ stays as it was: `make test` must not overwrite a user's
    own reports/cpu-results/), asv's machine file goes to HOME; the quick run times our Triton kernel
    through the interpreter beside the baseline, and the table says these are CPU/interpreter figures."""
    root = Path(__file__).resolve().parent.parent
    before = _tree(root / "reports"), (root / ".asv").exists()
    monkeypatch.setenv("HOME", str(tmp_path))  # asv's machine file goes to ~/.asv-machine.json
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TRITON_INTERPRET")  # as a user types it: quick turns the interpreter on itself
    result = invoke("run", "--quick", "--device", "cpu", "--variant", "gqa_8", "--results", str(tmp_path / "results"))
    assert result.exit_code == 0, result.output
    assert f"attention forward, CPU/interpreter figures at CPU-sized shapes; triton through the Triton " \
           f"interpreter (numpy emulation): a smoke run, not a GPU prediction ({tmp_path / 'results'}/" in result.output
    assert " triton " in result.output.split("attention forward, ")[1]
    assert "ready in" in result.output  # the live progress line of the prepared case
    (path,) = (tmp_path / "results").glob("cpu-*/*-*.json")
    # which SDPA backend the case ran, beside the results (asv keeps numbers only)
    from variantbench import choices

    assert choices.read(choices.path_for(path))["attention/gqa_8/sdpa/tiny-s128"]
    table = results.forward_tables(results.load_file(path))["attention"]
    assert sorted(table.index.get_level_values("implementation")) == ["sdpa", "triton"]
    assert not table.isna().any().any(), table  # every figure of both, the reference speedup too
    assert (tmp_path / ".asv-machine.json").exists()
    # asv publish draws only the parameters benchmarks.json lists: the whole grid, not the run's shard
    described = json.loads((tmp_path / "results" / "benchmarks.json").read_text())
    assert described["bench_attention.AttentionForward.time_forward"]["params"][0] == [
        f"'{v.name}'" for v in family("attention").variants]
    assert "bench_attention.AttentionForwardPower.track_sm_clock_mhz" in described
    after = _tree(root / "reports"), (root / ".asv").exists()
    changed = sorted(k for k in set(before[0]) | set(after[0]) if before[0].get(k) != after[0].get(k))
    assert changed == [] and after[1] == before[1]


def test_results_go_outside_the_gpu_history_by_default():
    from variantbench.runner import ROOT, default_results_dir

    assert default_results_dir("cpu", quick=True) == ROOT / "reports" / "cpu-results"
    assert default_results_dir("cuda", quick=True) == ROOT / "reports" / "quick-results"
    assert default_results_dir("cuda", quick=False) == ROOT / "reports" / "results"


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
    lines = [line for line in result.output.splitlines() if "attention/gqa_8/" in line and "skip" not in line]
    assert len(lines) == 5 and all(" ok " in line for line in lines), result.output
    assert "/triton/" in lines[-1]
    assert "5 passed, 0 mismatched, 0 errors" in result.output


def test_check_reports_a_dead_worker_as_one_line_per_case(monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from variantbench import cases, check_workers

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
    checked = check_workers.check_many(list(c for c in cases.iter_cases("attention", "cpu", variants=["gqa_8"],
                                                                         implementations=["sdpa"],
                                                                         shapes=["tiny-s128"])),
                                       jobs=2, report=lambda r: None)
    assert [r.status for r in checked] == ["error"]
    assert "a worker process died" in checked[0].line


def test_a_case_out_of_memory_beside_others_is_retried_alone(monkeypatch):
    from concurrent.futures import Future

    from variantbench import cases, check_workers

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
            future.set_result(check_workers.CheckResult("/".join(key), "error" if oom else "ok", "line",
                                                        out_of_memory=oom))
            return future

    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", Pool)
    selected = [c for c in cases.iter_cases("attention", "cpu", variants=["gqa_8"], shapes=["tiny-s128"],
                                            implementations=["sdpa", "flex"])]
    checked = check_workers.check_many(selected, jobs=4, report=lambda r: None)
    assert [r.status for r in checked] == ["ok", "ok"]
    assert calls[-1] == (1, "flex")  # the OOM case ran again, alone


def test_a_case_that_breaks_its_workers_gpu_fails_alone_and_the_workers_other_cases_rerun(monkeypatch):
    """An illegal memory access leaves a worker's CUDA context unusable (Flex reading past a page pool
    on the H200): that case fails with its line, the worker hands back the rest, a fresh pool checks them."""
    from concurrent.futures import Future

    from variantbench import cases, check_workers

    pools = []

    class Pool:  # one process of `workers`, run in this one: fresh, so nothing is lost yet
        def __init__(self, max_workers, mp_context):
            pools.append([])
            monkeypatch.setattr(check_workers, "_lost_by", None)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, key, backward):
            pools[-1].append(key[2])
            future = Future()
            future.set_result(fn(key, backward))
            return future

    selected = [c for c in cases.iter_cases("attention", "cpu", variants=["gqa_8"], shapes=["tiny-s128"],
                                            implementations=["flex", "sdpa", "triton"])]
    breaker = selected[0].implementation.name

    def check_one(case, backward=True):
        broken = case.implementation.name == breaker
        return check_workers.CheckResult(case.name, "error" if broken else "ok", "line", context_lost=broken)

    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", Pool)
    monkeypatch.setattr(check_workers, "check_one", check_one)
    checked = {r.case.split("/")[2]: r.status
               for r in check_workers.check_many(selected, jobs=4, report=lambda r: None)}
    assert checked == {"flex": "ok", "sdpa": "ok", "triton": "ok", breaker: "error"}
    assert pools[0][0] == breaker and pools[1] == pools[0][1:]  # handed back, checked afresh


def test_in_one_process_the_cases_after_a_broken_gpu_context_say_so(monkeypatch):
    from variantbench import cases, check_workers

    def check_one(case, backward=True):
        broken = case.implementation.name == "flex"
        return check_workers.CheckResult(case.name, "error" if broken else "ok", "line", context_lost=broken)

    monkeypatch.setattr(check_workers, "check_one", check_one)
    selected = [c for c in cases.iter_cases("attention", "cpu", variants=["gqa_8"], shapes=["tiny-s128"],
                                            implementations=["sdpa", "flex", "triton"])]
    checked = check_workers.check_many(selected, jobs=1, report=lambda r: None)
    assert [r.status for r in checked] == ["ok", "error", "error"]
    assert "broke this process's GPU context" in checked[2].line


def test_run_leaves_out_a_family_with_nothing_to_run_here_saying_why(monkeypatch, capsys):
    from variantbench.catalog import family
    from variantbench.runner import Selection, families_with_cases

    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    on_cuda = Selection(device="cuda")
    kept = families_with_cases([family("attention"), family("comms")], on_cuda)
    assert [f.name for f in kept] == ["attention"]
    assert "comms: nothing runs here (a collective needs 2 or more GPUs; this machine has 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        families_with_cases([family("comms")], on_cuda)
    assert exit_info.value.code == 2


def test_an_unknown_name_lists_each_known_one_once():
    """Every family has a `reference` implementation: the list of known names says it once, in order."""
    result = invoke("check", "--implementation", "cuda_graphs")
    assert result.exit_code == 2
    known = one_line(result).split("known: ")[1].split(", ")
    assert known == list(dict.fromkeys(known)) and known.count("reference") == 1
    assert known[:2] == ["reference", "sdpa"]  # catalog order


FAKE_ASV = '''\
#!{python}
"""A stand-in for asv: records one forward's figure and one failed (null) forward, as asv does when
a benchmark's setup raises, into the staged results folder of its --config; exits 2 as asv does."""
import json, sys
args = sys.argv[1:]
conf = json.load(open(args[args.index("--config") + 1]))
option = lambda name: next(a.split("=", 1)[1] for a in args if a.startswith(name + "="))
folder = f"{{conf['results_dir']}}/{{option('--machine')}}"
import os; os.makedirs(folder, exist_ok=True)
open(os.path.join(os.environ["HOME"], "asv-pythonpath"), "a").write(os.environ.get("ASV_PYTHONPATH", "-") + "\\n")
params = [["'gqa_8'"], ["'sdpa'", "'flex'"], ["'tiny-s128'"]]
data = {{"commit_hash": option("--set-commit-hash"), "params": {{"machine": option("--machine")}},
        "result_columns": ["result", "params"],
        "results": {{"bench_attention.AttentionForward.time_forward": [[0.001, None], params]}}}}
open(f"{{folder}}/{{option('--set-commit-hash')[:8]}}-existing.json", "w").write(json.dumps(data))
sys.exit(2)
'''


@pytest.fixture
def fake_asv(tmp_path, monkeypatch):
    """PATH with an `asv` that fails gqa_8/flex/tiny-s128's forward; HOME and caches under tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asv = bin_dir / "asv"
    asv.write_text(FAKE_ASV.format(python=sys.executable))
    asv.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return ["run", "--device", "cpu", "--variant", "gqa_8", "--implementation", "sdpa", "--implementation", "flex",
            "--shape", "tiny-s128", "--bench", r"AttentionForward\.time_forward$", "--results", str(tmp_path / "r")]


def test_run_exits_1_naming_a_kernel_that_disagrees_with_its_reference(fake_asv, monkeypatch):
    """README and DESIGN: a mismatch is exit 1. The failed benchmark's case is checked again (no
    precheck ran on the CPU) and found wrong: exit 1, naming it; the other figure is still printed."""
    import kernels.attention.flex as flex

    real = flex.prepare

    def broken(variant, problem):
        call = real(variant, problem)
        return lambda: call() * 1.01

    monkeypatch.setattr(flex, "prepare", broken)
    result = invoke(*fake_asv)
    assert result.exit_code == 1, result.output
    assert "MISMATCH  attention/gqa_8/flex/tiny-s128" in result.output
    assert "variantbench: kernel mismatch: attention/gqa_8/flex/tiny-s128 disagree" in result.output
    assert "Traceback" not in result.output


def test_run_exits_2_when_a_benchmark_crashed(fake_asv):
    """The same failure with a kernel that checks right was a crash (an infrastructure failure): 2."""
    result = invoke(*fake_asv)
    assert result.exit_code == 2, result.output
    assert "crashed: attention/gqa_8/flex/tiny-s128" in result.output


def test_the_precheck_verdict_names_the_mismatch_without_checking_again(monkeypatch, tmp_path):
    """On CUDA the precheck already checked every forward: its mismatch is the exit-1 verdict, with no
    second check of the case."""
    import pandas as pd

    from variantbench import check_workers, runner
    from variantbench.catalog import family

    def no_second_check(case, backward=True):
        raise AssertionError("checked again")

    monkeypatch.setattr(check_workers, "check_one", no_second_check)
    selection = runner.Selection(variants=("gqa_8",), implementations=("flex",), shapes=("tiny-s128",),
                                 device="cpu", tier="full")
    frame = pd.DataFrame({"benchmark": ["bench_attention.AttentionForward.time_forward"],
                          "params": [("gqa_8", "flex", "tiny-s128")], "failed": [True]})
    checked = [check_workers.CheckResult("attention/gqa_8/flex/tiny-s128", "mismatch", "MISMATCH  ...")]
    with pytest.raises(SystemExit) as stop:
        runner._exit_for_failures(frame, ["bench_attention.AttentionForward.time_forward"], [family("attention")],
                                  selection, checked, 2, tmp_path / "results.json")
    assert stop.value.code == 1 and "kernel mismatch: attention/gqa_8/flex/tiny-s128" in stop.value.message


def test_the_precheck_counts_a_prepare_time_skip_apart_and_leaves_it_in_the_run_memos(monkeypatch, tmp_path, capsys):
    """86c9ee3's H200 precheck said '48 ok, 1 failing' for Flex refusing MLA's absorbed decode, a skip;
    and each of that case's 12 track benchmarks then tried the ~10 s compile again."""
    from variantbench import check_workers, checking, metrics

    found = [check_workers.CheckResult("mla/mla/flex/x", "skip", "skip      mla/mla/flex/x: no config",
                                       unpreparable="flex cannot run mla at x: no config"),
             check_workers.CheckResult("attention/gqa_8/sdpa/x", "ok", "ok ..."),
             check_workers.CheckResult("attention/alibi/triton/x", "mismatch", "MISMATCH ...")]
    monkeypatch.setattr(checking, "run_checks", lambda *args, **kwargs: found)
    assert checking.precheck([], None, str(tmp_path)) == found
    assert "precheck: 1 ok, 1 skipped, 1 failing" in capsys.readouterr().out
    memo = metrics.memo_path("mla/mla/flex/x", tmp_path)
    assert json.loads(memo.read_text()) == {metrics.UNSUPPORTED: "flex cannot run mla at x: no config"}
    assert not metrics.memo_path("attention/gqa_8/sdpa/x", tmp_path).exists()


def test_asv_benchmarks_see_the_pythonpath_the_run_was_started_with(fake_asv, tmp_path, monkeypatch):
    """asv drops PYTHONPATH from its benchmarks unless ASV_PYTHONPATH carries it: on the lent H200 the
    peers installed on it (liger) passed the precheck, then were "not installed" in every benchmark."""
    peers = tmp_path / "peers"
    peers.mkdir()
    path = os.pathsep.join([str(peers), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)
    invoke(*fake_asv)
    assert (tmp_path / "asv-pythonpath").read_text().splitlines()[0] == path


def test_results_written_under_reports_are_no_uncommitted_code(tmp_path):
    """Lanes of one commit publish into reports/results while the others run: not a changed kernel."""
    from variantbench.runner import changed_code

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r.json").write_text("{}")
    (tmp_path / "kernel.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    (tmp_path / "reports" / "r.json").write_text('{"published": 1}')
    (tmp_path / "new_untracked.log").write_text("")
    assert changed_code(tmp_path) == []
    (tmp_path / "kernel.py").write_text("x = 2\n")
    assert changed_code(tmp_path) == ["kernel.py"]
