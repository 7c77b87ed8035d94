r"""compare and gate compare the rows their selection names (--bench, --family, --variant, ...), and
measure a commit whose results lack them. On an H200 a gate of `--bench 'AttentionForwardBackward\.time'`
given a folder that held only an earlier gate's forwards compared those forwards and passed, exit 0
in 0 s. Results are synthetic (tests/test_gate.py's `write`), with a second family's forward added."""

import itertools
import json
import math
import random
import re
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner

from test_gate import BASE, HEAD, IDENTITY, gate, write
from variantbench import asvrun, measure
from variantbench.cli import main
from variantbench.runner import ROOT, Selection
from variantbench.selecting import RowSelection

FORWARD = "bench_attention.AttentionForward.time_forward"
BACKWARD = "bench_attention.AttentionForwardBackward.time_forward_backward"
MOE = "bench_moe.MoEForward.time_forward"
FORWARD_ONLY = r"AttentionForward\.time"
BACKWARD_ONLY = r"AttentionForwardBackward\.time"
SHAPE = "llama-3-8b-s4k"
GQA_SLOWER = {("gqa_8", "triton", SHAPE): 1.5}  # HEAD's gqa_8 triton forward, 1.5x: a regression with --no-run


def timing(seed, grid, slow=1.0):
    """asv's entry of a timed benchmark over `grid` ([variants], [implementations], [shapes]), in
    test_gate's columns: each combination 1 ms x `slow`, 10 samples of 2% noise."""
    rng = random.Random(seed)
    samples = [sorted(1e-3 * slow * math.exp(rng.gauss(0, 0.02)) for _ in range(10)) for _ in itertools.product(*grid)]
    quoted = [[f"'{value}'" for value in values] for values in grid]
    return [[s[5] for s in samples], quoted, [s[2] for s in samples], [s[7] for s in samples], [10] * len(samples),
            samples]


def results_file(results_dir, commit):
    return next(results_dir.glob(f"*/{commit[:8]}*.json"))


def add(results_dir, commit, benchmark, entry):
    path = results_file(results_dir, commit)
    data = json.loads(path.read_text())
    data["results"][benchmark] = entry
    path.write_text(json.dumps(data))


def forwards_only(results_dir):
    """BASE's and HEAD's attention forwards (with their tracks) and MoE forwards, as an earlier gate of
    the forwards leaves them; on HEAD gqa_8's triton forward and every MoE forward are 1.5x slower."""
    moe = [["softmax_topk"], ["grouped_mm", "triton"], ["mixtral-8x7b-prefill-t8k-uniform"]]
    for commit, seed, slow in ((BASE, 1, {}), (HEAD, 2, GQA_SLOWER)):
        write(results_dir, commit, seed=seed, slow=slow, mhz=1800)
        add(results_dir, commit, MOE, timing(seed, moe, slow=1.5 if commit == HEAD else 1.0))


def compared(output):
    """{(benchmark, params)} of the rows a gate's summary (its Markdown tables) or compare's table shows."""
    return set(re.findall(r"(bench_[\w.]+)[\s|]+([^\s|,]+/[^\s|,]+/[^\s|,]+)", output))


def test_a_gate_of_benchmarks_the_results_lack_is_exit_3_in_one_line_with_no_run(tmp_path):
    forwards_only(tmp_path)
    result = gate(tmp_path, "--bench", BACKWARD_ONLY, "--summary", str(tmp_path / "s.md"))
    assert result.exit_code == 3, result.output
    assert result.output.splitlines() == [
        f"variantbench: {BASE[:8]} has no results of the selection --bench '{BACKWARD_ONLY}' under {tmp_path} on "
        f"{IDENTITY['machine']} (measure it: leave out --no-run)"]
    assert "not gated (exit 3: incomparable or no baseline)" in (tmp_path / "s.md").read_text()
    # a variant the results lack, of a benchmark they hold
    result = gate(tmp_path, "--bench", FORWARD_ONLY, "--variant", "alibi")
    assert result.exit_code == 3 and "--bench 'AttentionForward\\.time' --variant alibi" in result.output


def test_the_gate_compares_only_the_benchmarks_and_parameters_selected(tmp_path):
    forwards_only(tmp_path)
    everything = gate(tmp_path)
    assert everything.exit_code == 1  # as before any selection: every row, both families' slowdowns
    assert {b for b, _ in compared(everything.output)} >= {FORWARD, MOE}

    attention = gate(tmp_path, "--bench", FORWARD_ONLY)
    assert attention.exit_code == 1, attention.output
    rows = compared(attention.output)
    assert {b for b, _ in rows} == {FORWARD} and (FORWARD, f"gqa_8/triton/{SHAPE}") in rows

    causal = gate(tmp_path, "--bench", FORWARD_ONLY, "--variant", "causal", "--implementation", "sdpa")
    assert causal.exit_code == 0, causal.output  # gqa_8's slowdown is not selected
    assert compared(causal.output) == {(FORWARD, f"causal/sdpa/{SHAPE}")}

    moe = gate(tmp_path, "--family", "moe")
    assert moe.exit_code == 1 and {b for b, _ in compared(moe.output)} == {MOE}

    listed = CliRunner().invoke(main, ["compare", BASE, HEAD, "--no-run", "--results", str(tmp_path), "--bench",
                                       FORWARD_ONLY, "--shape", SHAPE, "--variant", "mqa"])
    assert listed.exit_code == 0, listed.output
    assert compared(listed.output) == {(FORWARD, f"mqa/{impl}/{SHAPE}") for impl in ("sdpa", "flex", "triton")}


def test_with_no_run_a_selection_held_in_part_is_compared_as_held(tmp_path):
    forwards_only(tmp_path)
    result = gate(tmp_path, "--bench", r"Attention(Forward|ForwardBackward)\.time", "--variant", "causal")
    assert result.exit_code == 0, result.output
    assert {b for b, _ in compared(result.output)} == {FORWARD}


def test_a_bench_selection_keeps_its_timings_power_tracks_and_not_the_others():
    params = ("gqa_8", "sdpa", SHAPE)
    names = [FORWARD, BACKWARD, "bench_attention.AttentionForwardPower.track_sm_clock_mhz",
             "bench_attention.AttentionForwardBackwardPower.track_sm_clock_mhz",
             "bench_attention.AttentionMetrics.track_ratio_to_baseline"]
    frame = pd.DataFrame({"benchmark": names, "params": [params] * len(names)})
    picked = RowSelection(bench=BACKWARD_ONLY).rows(frame, ROOT)
    assert list(picked.benchmark) == [BACKWARD, "bench_attention.AttentionForwardBackwardPower.track_sm_clock_mhz"]
    assert RowSelection().rows(frame, ROOT) is frame  # nothing selected: every row, untouched


def test_a_typed_plugin_name_selects_its_recorded_rows():
    frame = pd.DataFrame({"benchmark": [FORWARD] * 3, "params": [("sink_window@sinks-1a2b3c4d", "flex", SHAPE),
                                                               ("sink_window_2", "flex", SHAPE),
                                                               ("gqa_8", "flex", SHAPE)]})
    picked = RowSelection.of(Selection(variants=("sink_window",)), None).rows(frame, ROOT)
    assert [p[0] for p in picked.params] == ["sink_window@sinks-1a2b3c4d"]


@pytest.fixture
def fake_measuring(tmp_path, monkeypatch):
    """Checkouts.run replaced by what `variantbench run` does to the results folder, without asv: the
    commit's file copied into a staging folder (asvrun.run_staged), the benchmarks its --bench names
    added to it, each over gqa_8 and causal through sdpa (asv loads the staged file and saves it with
    them: Results.load_data), then asvrun.publish. Returns the (commit, run args) of each call."""
    calls = []
    suite = asvrun.suite_benchmarks(ROOT)

    def run(self, sha, results_dir, run_args, echo):
        calls.append((sha, run_args))
        bench = run_args[run_args.index("--bench") + 1]
        target = results_file(results_dir, sha)
        staged = tmp_path / "staging" / target.parent.name / target.name
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, staged)
        data = json.loads(staged.read_text())
        for name in (n for n in suite if re.search(bench, n) and ".time_" in n):
            data["results"][name] = timing(7, [["causal", "gqa_8"], ["sdpa"], [SHAPE]])
        staged.write_text(json.dumps(data))
        asvrun.publish(staged, target)
        return 0

    monkeypatch.setattr(measure.Checkouts, "run", run)
    return calls


def measuring_gate(results_dir, *extra):
    return CliRunner().invoke(main, ["gate", BASE, HEAD, "--results", str(results_dir), *extra])


def test_the_gate_measures_a_commit_lacking_the_selection_and_keeps_what_it_held(tmp_path, fake_measuring):
    forwards_only(tmp_path)
    held = {c: json.loads(results_file(tmp_path, c).read_text())["results"] for c in (BASE, HEAD)}
    result = measuring_gate(tmp_path, "--bench", BACKWARD_ONLY)
    assert result.exit_code == 0, result.output
    assert [(sha, args[args.index("--bench") + 1]) for sha, args in fake_measuring] == [
        (BASE, BACKWARD_ONLY), (HEAD, BACKWARD_ONLY)]
    assert compared(result.output) == {(BACKWARD, f"{v}/sdpa/{SHAPE}") for v in ("causal", "gqa_8")}
    for commit, earlier in held.items():
        now = json.loads(results_file(tmp_path, commit).read_text())["results"]
        assert {name: now[name] for name in earlier} == earlier  # every earlier benchmark, as it was
        assert BACKWARD in now


def test_only_the_timings_a_commit_lacks_are_measured(tmp_path, fake_measuring):
    forwards_only(tmp_path)
    result = measuring_gate(tmp_path, "--bench", r"Attention(Forward|ForwardBackward)\.time", "--variant", "causal")
    assert result.exit_code == 0, result.output
    narrowed = [args[args.index("--bench") + 1:] for _, args in fake_measuring]
    assert narrowed == [[rf"^{re.escape(BACKWARD)}$"]] * 2  # the forwards held are not measured again
    assert all(args.count("--bench") == 1 and "causal" in args for _, args in fake_measuring)
    assert {b for b, _ in compared(result.output)} == {FORWARD, BACKWARD}


def test_tracks_the_results_lack_are_not_measured_for(tmp_path, fake_measuring):
    """Results recorded before the power state was (session 19) have no power tracks: a --bench that
    names them too compares the timings held, and measures nothing for the tracks."""
    for commit, seed in ((BASE, 1), (HEAD, 2)):
        write(tmp_path, commit, seed=seed)  # no mhz: no power tracks
    result = measuring_gate(tmp_path, "--bench", r"AttentionForward(Power)?\.")
    assert result.exit_code == 0, result.output
    assert fake_measuring == [] and {b for b, _ in compared(result.output)} == {FORWARD}


def test_without_a_selection_results_held_are_compared_and_nothing_is_measured(tmp_path, fake_measuring):
    forwards_only(tmp_path)
    assert measuring_gate(tmp_path, "--factor", "2").exit_code == 0
    assert fake_measuring == []


def test_a_bench_that_is_no_regular_expression_is_one_line_exit_2_with_results_held(tmp_path):
    forwards_only(tmp_path)
    result = gate(tmp_path, "--bench", "Attention(")
    assert result.exit_code == 2 and result.output.startswith("variantbench: --bench 'Attention(': not a regular")


def test_asv_keeps_the_benchmarks_a_run_into_a_commits_results_file_did_not_run(tmp_path):
    """What the gate's measuring relies on (variantbench.measure, Checkouts.results_for): asv's
    Run.run loads the commit's file (Results.load_data) before running, and saves every benchmark
    it loaded with the ones it ran."""
    from asv.results import Results
    from asv.runner import BenchmarkResult

    def results():
        return Results({"machine": "m", "python": "3.12"}, {}, BASE, 0, "3.12", "existing-py", {})

    def benchmark(name):
        return {"name": name, "version": "1", "params": [["'a'"]], "param_names": ["p"]}

    def ran(value):
        return BenchmarkResult(result=[value], samples=[[value]], number=[1], errcode=0, stderr="", profile=None)

    first = results()
    first.add_result(benchmark(FORWARD), ran(1.0))
    first.save(tmp_path)
    second = results()
    second.load_data(tmp_path)  # as asv/commands/run.py does before run_benchmarks
    second.add_result(benchmark(BACKWARD), ran(2.0))
    second.save(tmp_path)
    saved = json.loads(next(tmp_path.glob("m/*.json")).read_text())["results"]
    assert {name: entry[0] for name, entry in saved.items()} == {FORWARD: [1.0], BACKWARD: [2.0]}
