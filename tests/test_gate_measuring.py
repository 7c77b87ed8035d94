r"""What compare and gate measure where a commit lacks the timings its selection names, and what they
refuse: a commit is measured for the timings of the selection the other commit holds (both, where
neither holds any); two commits sharing none are exit 3; a measuring run that fails without
recording them is exit 2, as is one that would record under another machine than the one compared.
Results are synthetic (tests/test_gate.py's `write`); runs are tests/test_gate_selection.py's
fake_runs, which copy what a run of the commit records from its `truth` folder."""

import json
import re

import pytest
from click.testing import CliRunner

from test_gate import BASE, HEAD, IDENTITY, write
from test_gate_selection import (BACKWARD, BACKWARD_GRID, BACKWARD_ONLY, FORWARD, FORWARD_ONLY, SHAPE, add,
                                 benches, compared, fake_runs, forwards_only, measuring_gate, results_file,
                                 timing, with_backwards)
from variantbench import measure, runner
from variantbench.cli import main
from variantbench.device import default_device

BOTH = r"Attention(Forward|ForwardBackward)\.time"
LANE = dict(IDENTITY, machine="lane1")  # results a lane recorded under --machine lane1


def verdicts(output) -> str:
    return re.search(r"Regression verdicts: (.*)\.", output).group(1)


def slower(output) -> dict:
    """{(benchmark, params): ratio} of the gate summary's Slower table."""
    failing = output.split("<details>")[0]
    return {(b, p): float(r) for b, p, r in re.findall(r"\| (bench_\S+) \| (\S+) \| slower \| ([\d.]+) \|", failing)}


def measuring(calls):
    """The runs that measured a commit lacking results (not the confirming re-runs, which --repeat)."""
    return [(sha, args) for sha, args in calls if "--repeat" not in args]


def drop(results_dir, commit, name):
    path = results_file(results_dir, commit)
    data = json.loads(path.read_text())
    del data["results"][name]
    path.write_text(json.dumps(data))


def attention(folder, backward_slow=1.0):
    """Each commit's attention forwards (with their power state), and backwards over causal and gqa_8
    through sdpa, HEAD's `backward_slow` times BASE's."""
    for commit, seed in ((BASE, 1), (HEAD, 2)):
        write(folder, commit, seed=seed, mhz=1800)
        add(folder, commit, BACKWARD, timing(seed + 2, BACKWARD_GRID, slow=backward_slow if commit == HEAD else 1.0))


@pytest.fixture
def fake_measuring(tmp_path, monkeypatch):
    return fake_runs(tmp_path, monkeypatch)


# D1: a commit lacking timings the other holds is measured for them; nothing shared is exit 3


def test_disjoint_rows_are_each_measured_for_the_others_and_compared(tmp_path, fake_measuring):
    """BASE holds only forwards, HEAD only the backward (3x slower): a gate of gqa_8 read "gone 12,
    new 2" and passed, measuring nothing. Each is measured for what the other holds, under the
    user's --family and --variant; HEAD's backward is the regression it is."""
    results = tmp_path / "results"
    attention(results, backward_slow=3.0)
    attention(fake_measuring.truth, backward_slow=3.0)
    drop(results, BASE, BACKWARD)
    drop(results, HEAD, FORWARD)
    selection = ["--family", "attention", "--variant", "gqa_8"]
    result = measuring_gate(results, *selection)
    assert result.exit_code == 1, result.output
    assert benches(measuring(fake_measuring.calls)) == [(BASE, rf"^{re.escape(BACKWARD)}$"),
                                                        (HEAD, rf"^{re.escape(FORWARD)}$")]
    assert all(args[:7] == ["--tier", "default", "--family", "attention", "--variant", "gqa_8", "--bench"]
               for _, args in measuring(fake_measuring.calls))
    assert compared(result.output) == {(FORWARD, f"gqa_8/{i}/{SHAPE}") for i in ("sdpa", "flex", "triton")} | {
        (BACKWARD, f"gqa_8/sdpa/{SHAPE}")}
    assert "new" not in verdicts(result.output) and "gone" not in verdicts(result.output)
    assert slower(result.output) == {(BACKWARD, f"gqa_8/sdpa/{SHAPE}"): pytest.approx(3, rel=0.1)}


def test_two_commits_sharing_no_timing_of_the_selection_are_exit_3(tmp_path):
    attention(tmp_path)
    drop(tmp_path, BASE, BACKWARD)
    drop(tmp_path, HEAD, FORWARD)
    line = (f"variantbench: {BASE[:8]} and {HEAD[:8]} share no timing of the selection --family attention --variant "
            f"gqa_8 under {tmp_path} on {IDENTITY['machine']} (measure them: leave out --no-run)")
    for command in (["gate", "--summary", str(tmp_path / "s.md")], ["compare"]):
        result = CliRunner().invoke(main, [command[0], BASE, HEAD, "--no-run", "--results", str(tmp_path),
                                           *command[1:], "--family", "attention", "--variant", "gqa_8"])
        assert result.exit_code == 3 and result.output.splitlines() == [line], result.output
    assert "not gated (exit 3: incomparable or no baseline)" in (tmp_path / "s.md").read_text()
    result = CliRunner().invoke(main, ["gate", BASE, HEAD, "--no-run", "--results", str(tmp_path)])  # no filter
    assert result.exit_code == 3 and "share no timing under" in result.output, result.output


def test_a_backward_only_head_holds_is_measured_on_base(tmp_path, fake_measuring):
    """BASE holds the forwards, HEAD the forwards and a 3x slower backward: `--variant gqa_8` passed."""
    results = tmp_path / "results"
    attention(results, backward_slow=3.0)
    attention(fake_measuring.truth, backward_slow=3.0)
    drop(results, BASE, BACKWARD)
    result = measuring_gate(results, "--variant", "gqa_8")
    assert result.exit_code == 1, result.output
    assert benches(measuring(fake_measuring.calls)) == [(BASE, rf"^{re.escape(BACKWARD)}$")]
    assert slower(result.output) == {(BACKWARD, f"gqa_8/sdpa/{SHAPE}"): pytest.approx(3, rel=0.1)}


def test_parameters_one_commit_lacks_are_measured(tmp_path, fake_measuring):
    """BASE holds only the causal forwards an earlier `--variant causal` gate left; HEAD's gqa_8 triton
    forward is 2x slower: `--bench 'AttentionForward\\.time'` compared causal alone and passed."""
    doubled = {("gqa_8", "triton", SHAPE): 2.0}
    write(tmp_path / "results", BASE, seed=1, mhz=1800, variants=["causal"])
    write(tmp_path / "results", HEAD, seed=2, mhz=1800, slow=doubled)
    write(fake_measuring.truth, BASE, seed=1, mhz=1800)
    write(fake_measuring.truth, HEAD, seed=2, mhz=1800, slow=doubled)
    result = measuring_gate(tmp_path / "results", "--bench", FORWARD_ONLY)
    assert result.exit_code == 1, result.output
    assert benches(measuring(fake_measuring.calls)) == [(BASE, rf"^{re.escape(FORWARD)}$")]
    assert slower(result.output) == {(FORWARD, f"gqa_8/triton/{SHAPE}"): pytest.approx(2, rel=0.1)}
    assert "new" not in verdicts(result.output)


def test_an_a_a_gate_of_a_commit_without_results_measures_it_once(tmp_path, fake_measuring):
    attention(fake_measuring.truth)
    result = CliRunner().invoke(main, ["gate", HEAD, HEAD, "--results", str(tmp_path / "results"), "--bench",
                                       BACKWARD_ONLY])
    assert result.exit_code == 0, result.output
    assert benches(fake_measuring.calls) == [(HEAD, BACKWARD_ONLY)]


# D8: with --no-run, what one side lacks is said


def test_with_no_run_the_timings_one_side_lacks_are_noted(tmp_path):
    attention(tmp_path)
    drop(tmp_path, HEAD, BACKWARD)
    note = ("HEAD lacks 2 timing(s) of the selection that BASE holds; with --no-run none was measured, so they "
            "read gone.")
    result = CliRunner().invoke(main, ["gate", BASE, HEAD, "--no-run", "--results", str(tmp_path), "--bench", BOTH])
    assert result.exit_code == 0 and f"Note: {note}" in result.output, result.output
    assert "gone 2" in verdicts(result.output)
    result = CliRunner().invoke(main, ["compare", BASE, HEAD, "--no-run", "--results", str(tmp_path), "--bench", BOTH])
    assert result.exit_code == 0 and f"note: {note}" in result.output, result.output
    attention(tmp_path)
    drop(tmp_path, BASE, BACKWARD)
    result = CliRunner().invoke(main, ["gate", BASE, HEAD, "--no-run", "--results", str(tmp_path), "--variant",
                                       "gqa_8"])
    assert result.exit_code == 0, result.output
    assert ("Note: BASE lacks 1 timing(s) of the selection that HEAD holds; with --no-run none was measured, so they "
            "read new.") in result.output


# D2: measuring records under the machine compared, or not at all


def test_results_of_another_machine_than_the_runs_are_not_measured_into(tmp_path, fake_measuring):
    """Results recorded under lane1: the run would record under this machine's own name (here h100),
    where the re-read never looks (exit 3 "recorded no results", or a measured backward never read)."""
    results = tmp_path / "results"
    forwards_only(results)
    for path in results.glob("h100/*.json"):
        data = json.loads(path.read_text())
        data["params"]["machine"] = "lane1"
        (results / "lane1").mkdir(exist_ok=True)
        (results / "lane1" / path.name).write_text(json.dumps(data))
        path.unlink()
    with_backwards(fake_measuring.truth)
    result = measuring_gate(results, "--bench", BACKWARD_ONLY, "--summary", str(tmp_path / "s.md"))
    assert result.exit_code == 2 and fake_measuring.calls == [], result.output
    assert result.output.splitlines() == [
        f"variantbench: {BASE[:8]}'s results are compared on machine lane1, but measuring it records under h100: "
        "pass --machine lane1 to measure into it, or --no-run"]
    assert "pass --machine lane1" in (tmp_path / "s.md").read_text()
    result = measuring_gate(results, "--bench", BOTH, "--factor", "2")  # the forwards both hold: none measured
    assert result.exit_code == 0 and fake_measuring.calls == [], result.output
    result = measuring_gate(results, "--bench", BACKWARD_ONLY, "--machine", "lane1")
    assert result.exit_code == 0, result.output
    assert [args[-2:] for _, args in fake_measuring.calls] == [["--machine", "lane1"]] * 2
    assert {b for b, _ in compared(result.output)} == {BACKWARD}


def test_a_commit_measured_alone_on_another_machine_is_not_measured_into_it(tmp_path, fake_measuring):
    """No machine holds both: BASE's results (lane1) lack HEAD's backward (h100)."""
    attention(tmp_path / "results")
    attention(fake_measuring.truth)
    (tmp_path / "results" / "h100" / f"{BASE[:8]}-existing-py.json").unlink()
    write(tmp_path / "results", BASE, seed=1, mhz=1800, identity=LANE)  # forwards alone
    result = measuring_gate(tmp_path / "results", "--variant", "gqa_8")
    assert result.exit_code == 2 and "compared on machine lane1" in result.output and fake_measuring.calls == []


def test_the_machine_a_run_records_under():
    assert measure.recording_machine(["--tier", "default", "--machine", "lane1"]) == "lane1"
    assert measure.recording_machine(["--device", "cpu"]) == runner.machine_info("cpu")[0]
    assert measure.recording_machine(["--tier", "default"]) == runner.machine_info(default_device())[0]


# D3: a measuring run that fails without recording what it was to add is exit 2


def test_a_failed_run_that_recorded_nothing_asked_for_is_exit_2(tmp_path, fake_measuring):
    results = tmp_path / "results"
    attention(results)
    attention(fake_measuring.truth)
    drop(results, HEAD, BACKWARD)
    fake_measuring.code, fake_measuring.records = 2, False
    result = measuring_gate(results, "--bench", BOTH)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == f"variantbench: measuring {HEAD[:8]} exited 2 without recording {BACKWARD}"
    fake_measuring.code = 0  # exit 0 without it: not in HEAD's suite, so BASE's backward is gone
    result = measuring_gate(results, "--bench", BOTH)
    assert result.exit_code == 0 and "gone 2" in verdicts(result.output), result.output
    fake_measuring.code, fake_measuring.records = 1, True  # a mismatch elsewhere: what was asked for recorded
    result = measuring_gate(results, "--bench", BOTH)
    assert result.exit_code == 0 and "gone" not in verdicts(result.output), result.output


def test_a_failed_run_of_a_selection_neither_holds_is_exit_2(tmp_path, fake_measuring):
    forwards_only(tmp_path / "results")
    fake_measuring.code, fake_measuring.records = 2, False
    result = measuring_gate(tmp_path / "results", "--bench", BACKWARD_ONLY)
    assert result.exit_code == 2 and benches(fake_measuring.calls) == [(BASE, BACKWARD_ONLY)], result.output
    assert result.output.splitlines()[-1] == (f"variantbench: measuring {BASE[:8]} exited 2 without recording any "
                                              f"timing of the selection --bench '{BACKWARD_ONLY}'")


# D4: what neither commit holds is not demanded; so nothing that no run records is


def test_timings_both_commits_hold_are_not_measured_again(tmp_path, fake_measuring):
    """`--bench 'Forward\\.time'` names the collectives (nothing runs on one GPU), the blocks, MLA, ...:
    demanded of each commit, they started runs that exited 2 "matches no benchmark", gate after gate."""
    forwards_only(tmp_path)
    for selection in (["--variant", "causal"], [], ["--family", "attention", "--shape", SHAPE]):
        result = measuring_gate(tmp_path, "--bench", r"Forward\.time", "--factor", "2", *selection)
        assert result.exit_code == 0 and fake_measuring.calls == [], (selection, result.output)


def test_timings_the_bench_names_and_neither_commit_holds_are_named_in_the_summary(tmp_path, fake_measuring):
    """Both hold the forwards, neither the backward `--bench` also names: the forwards are compared and
    the backward, not measured (neither side holds it to demand it of the other), is named as left out."""
    forwards_only(tmp_path)
    result = measuring_gate(tmp_path, "--bench", BOTH, "--factor", "2")
    assert result.exit_code == 0 and fake_measuring.calls == [], result.output
    assert f"Neither commit holds {BACKWARD}, which --bench names: not measured" in result.output
    assert "Neither commit holds" not in measuring_gate(tmp_path, "--bench", r"AttentionForward\.time",
                                                        "--factor", "2").output


def test_a_suspect_whose_confirming_re_run_measured_nothing_stays_slower(tmp_path, fake_measuring, monkeypatch):
    """A re-run that records nothing (here BASE's) clears no suspect: the gate says which commit measured nothing and
    HEAD's 3x backward still fails it, unconfirmed, where a missing re-run must never read as a pass."""
    results = tmp_path / "results"
    attention(results, backward_slow=3.0)
    attention(fake_measuring.truth, backward_slow=3.0)
    recording = measure.Checkouts.run

    def base_rerun_records_nothing(self, sha, results_dir, run_args, echo):
        fake_measuring.records = not (sha == BASE and "--repeat" in run_args)
        return recording(self, sha, results_dir, run_args, echo)

    monkeypatch.setattr(measure.Checkouts, "run", base_rerun_records_nothing)
    result = measuring_gate(results, "--family", "attention", "--variant", "gqa_8")
    assert result.exit_code == 1, result.output
    assert f"confirming on {BASE[:8]} measured nothing" in result.output
    assert [sha for sha, args in fake_measuring.calls if "--repeat" in args] == [BASE, HEAD]
    assert slower(result.output) and all(ratio > 2.5 for ratio in slower(result.output).values())
