r"""compare and gate compare the rows their selection names (--bench, --family, --variant, ...), and
measure a commit whose results lack them. On an H200 a gate of `--bench 'AttentionForwardBackward\.time'`
given a folder that held only an earlier gate's forwards compared those forwards and passed, exit 0
in 0 s. Results are synthetic (tests/test_gate.py's `write`), with a second family's forward added.
What is measured where a commit lacks them: tests/test_gate_measuring.py."""

import itertools
import json
import math
import random
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from click.testing import CliRunner

from test_gate import BASE, HEAD, IDENTITY, IMPLS, gate, write
from variantbench import asvrun, measure, runner
from variantbench.cli import main
from variantbench.runner import ROOT, Selection
from variantbench.selecting import RowSelection, benchmarks_named

FORWARD = "bench_attention.AttentionForward.time_forward"
BACKWARD = "bench_attention.AttentionForwardBackward.time_forward_backward"
MOE = "bench_moe.MoEForward.time_forward"
FORWARD_ONLY = r"AttentionForward\.time"
BACKWARD_ONLY = r"AttentionForwardBackward\.time"
SHAPE = "llama-3-8b-s4k"
GQA_SLOWER = {("gqa_8", "triton", SHAPE): 1.5}  # HEAD's gqa_8 triton forward, 1.5x: a regression with --no-run
BACKWARD_GRID = [["causal", "gqa_8"], ["sdpa"], [SHAPE]]


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
        f"variantbench: {BASE[:8]} and {HEAD[:8]} share no timing of the selection --bench '{BACKWARD_ONLY}' under "
        f"{tmp_path} on {IDENTITY['machine']} (measure them: leave out --no-run)"]
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
    return fake_runs(tmp_path, monkeypatch)


def fake_runs(tmp_path, monkeypatch):
    """Checkouts.run replaced by what `variantbench run` does to the results folder, without asv: the
    commit's file copied into a staging folder (asvrun.run_staged), the benchmarks its --bench and
    --family name added to it from that commit's file in `truth` (a folder a test writes whole: what
    a run of the commit records; asv loads the staged file and saves it with them: Results.load_data),
    then asvrun.publish, under --machine or the runner's own name for this machine (runner.machine_info,
    here IDENTITY's). Returns calls (the (commit, run args) of each run), truth, and what runs do:
    `code`, their exit code, and `records`, False for a run that records nothing."""
    fake = SimpleNamespace(calls=[], truth=tmp_path / "truth", code=0, records=True)
    monkeypatch.setattr(runner, "machine_info", lambda device: (IDENTITY["machine"], {}))

    def run(self, sha, results_dir, run_args, echo):
        fake.calls.append((sha, list(run_args)))
        if not fake.records:
            return fake.code
        machine = measure.recording_machine(run_args)
        target = Path(results_dir) / machine / f"{sha[:8]}-existing-py.json"
        staged = tmp_path / "staging" / machine / target.name
        staged.parent.mkdir(parents=True, exist_ok=True)
        truth = json.loads(results_file(fake.truth, sha).read_text())
        data = (json.loads(target.read_text()) if target.exists()
                else dict(truth, params=dict(truth["params"], machine=machine), results={}))
        bench = run_args[run_args.index("--bench") + 1] if "--bench" in run_args else None
        families = [value for flag, value in zip(run_args, run_args[1:]) if flag == "--family"]
        for name in benchmarks_named(truth["results"], bench, families):
            data["results"][name] = truth["results"][name]
        staged.write_text(json.dumps(data))
        asvrun.publish(staged, target)
        return fake.code

    monkeypatch.setattr(measure.Checkouts, "run", run)
    return fake


def measuring_gate(results_dir, *extra):
    return CliRunner().invoke(main, ["gate", BASE, HEAD, "--results", str(results_dir), *extra])


def benches(calls):
    """(commit, --bench) of each measuring run."""
    return [(sha, args[args.index("--bench") + 1] if "--bench" in args else None) for sha, args in calls]


def with_backwards(folder, slow=1.0):
    """forwards_only's results with each commit's attention backward over causal and gqa_8 through
    sdpa (HEAD's `slow` times BASE's)."""
    forwards_only(folder)
    for commit, seed in ((BASE, 3), (HEAD, 4)):
        add(folder, commit, BACKWARD, timing(seed, BACKWARD_GRID, slow=slow if commit == HEAD else 1.0))


def test_the_gate_measures_a_commit_lacking_the_selection_and_keeps_what_it_held(tmp_path, fake_measuring):
    forwards_only(tmp_path / "results")
    with_backwards(fake_measuring.truth)
    held = {c: json.loads(results_file(tmp_path / "results", c).read_text())["results"] for c in (BASE, HEAD)}
    result = measuring_gate(tmp_path / "results", "--bench", BACKWARD_ONLY)
    assert result.exit_code == 0, result.output
    assert benches(fake_measuring.calls) == [(BASE, BACKWARD_ONLY), (HEAD, BACKWARD_ONLY)]  # neither held any
    assert compared(result.output) == {(BACKWARD, f"{v}/sdpa/{SHAPE}") for v in ("causal", "gqa_8")}
    for commit, earlier in held.items():
        now = json.loads(results_file(tmp_path / "results", commit).read_text())["results"]
        assert {name: now[name] for name in earlier} == earlier  # every earlier benchmark, as it was
        assert BACKWARD in now


def test_only_the_timings_a_commit_lacks_that_the_other_holds_are_measured(tmp_path, fake_measuring):
    """HEAD lacks BASE's backward: HEAD's backward alone is measured, under the user's --variant; the
    forwards both hold are not measured again."""
    results = tmp_path / "results"
    forwards_only(results)
    add(results, BASE, BACKWARD, timing(3, BACKWARD_GRID))
    with_backwards(fake_measuring.truth)
    result = measuring_gate(results, "--bench", r"Attention(Forward|ForwardBackward)\.time", "--variant", "causal")
    assert result.exit_code == 0, result.output
    assert benches(fake_measuring.calls) == [(HEAD, rf"^{re.escape(BACKWARD)}$")]
    assert fake_measuring.calls[0][1].count("--bench") == 1 and "causal" in fake_measuring.calls[0][1]
    assert compared(result.output) == {(FORWARD, f"causal/{impl}/{SHAPE}") for impl in ("sdpa", "flex", "triton")} | {
        (BACKWARD, f"causal/sdpa/{SHAPE}")}


def test_tracks_the_results_lack_are_not_measured_for(tmp_path, fake_measuring):
    """Results recorded before the power state was (session 19) have no power tracks: a --bench that
    names them too compares the timings held, and measures nothing for the tracks."""
    for commit, seed in ((BASE, 1), (HEAD, 2)):
        write(tmp_path, commit, seed=seed)  # no mhz: no power tracks
    result = measuring_gate(tmp_path, "--bench", r"AttentionForward(Power)?\.")
    assert result.exit_code == 0, result.output
    assert fake_measuring.calls == [] and {b for b, _ in compared(result.output)} == {FORWARD}


def test_without_a_selection_results_held_are_compared_and_nothing_is_measured(tmp_path, fake_measuring):
    forwards_only(tmp_path)
    assert measuring_gate(tmp_path, "--factor", "2").exit_code == 0
    assert fake_measuring.calls == []


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


def budget_rows(output):
    """The signal-budget table's rows of a gate's summary: {variant: (fastest fused, verdict)}."""
    return {m[0]: (m[1], m[2]) for m in re.findall(r"\| attention/(\w+) \| [\w-]+ \| (\w+|-) \| [\d.-]+ \| [\d.%]+ "
                                                  r"\| [\d.]+ \| ([\w ]+) \|", output)}


def test_the_signal_budget_is_judged_on_every_implementation_whatever_bench_and_implementation_say(tmp_path):
    """A variant's verdict is its fastest fused implementation's: with --implementation triton, triton
    read as sliding_window_1024's fastest and its 1.6 failed a gate that passes without the filter; a
    timing --bench dropped the ratios (tracks) and judged nothing, so a variant over budget passed."""
    write(tmp_path, BASE, seed=1, mhz=1800)
    write(tmp_path, HEAD, seed=2, mhz=1800, ratios={("sliding_window_1024", "triton", SHAPE): 1.6})
    for extra in ([], ["--implementation", "triton"], ["--bench", FORWARD_ONLY]):
        result = gate(tmp_path, *extra)
        assert result.exit_code == 0, (extra, result.output)
        assert budget_rows(result.output)["sliding_window_1024"] == ("sdpa", "within"), extra
    write(tmp_path, HEAD, seed=2, mhz=1800, ratios={("sliding_window_1024", impl, SHAPE): 1.6 for impl in IMPLS})
    for extra in ([], ["--implementation", "sdpa"], ["--bench", FORWARD_ONLY], ["--variant", "sliding_window_1024"]):
        result = gate(tmp_path, *extra)
        assert result.exit_code == 1 and "Newly over the signal budget" in result.output, (extra, result.output)
    assert set(budget_rows(gate(tmp_path, "--variant", "gqa_8").output)) == {"gqa_8"}  # the variants selected


def test_a_selection_holding_no_ratio_says_so_in_the_summary(tmp_path):
    forwards_only(tmp_path)  # MoE forwards, no MoE ratios
    result = gate(tmp_path, "--family", "moe", "--factor", "2")
    assert result.exit_code == 0, result.output
    assert ("No ratio to baseline recorded on HEAD of the selection --family moe: no signal budget is judged."
            in result.output)


@pytest.mark.parametrize("options, line", [
    (["--bench", "Attention("], "--bench 'Attention(': not a regular expression"),
    (["--variant", "gqa8"], "variant 'gqa8'; known: causal, gqa_8"),
    (["--family", "attention", "--implementation", "grouped_mm"], "unknown attention implementation 'grouped_mm'"),
    (["--bench", FORWARD_ONLY, "--family", "moe"], r"--bench 'AttentionForward\\.time' matches no benchmark of the "
                                                   "suite's moe"),
    (["--variant", "causal", "--implementation", "grouped_mm"],
     "no family knows every name of the selection --variant causal --implementation grouped_mm"),
    (["--bench", "Power"], "the selection --bench Power names no timing benchmark of the suite"),
    (["--bench", "Metrics"], "the selection --bench Metrics names no timing benchmark of the suite"),
])
def test_options_run_would_refuse_are_one_line_exit_2_before_anything_runs(tmp_path, fake_measuring, options, line):
    """HEAD has no results, so anything that ran would measure it: a mistyped name or --bench read
    'no results' (exit 3) after a worktree and a run, and a --bench of tracks alone compared nothing
    and passed. The gate's summary says why."""
    write(tmp_path / "results", BASE, seed=1)
    for command in (["gate", "--summary", str(tmp_path / "s.md")], ["compare"], ["gate", "--no-run"]):
        result = CliRunner().invoke(main, [command[0], BASE, HEAD, "--results", str(tmp_path / "results"),
                                           *command[1:], *options])
        assert result.exit_code == 2, (command, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith("variantbench: ") and line in result.output
    assert fake_measuring.calls == []
    summary = (tmp_path / "s.md").read_text()
    assert "not gated (exit 2: bad input or infrastructure failure)" in summary and line in summary
