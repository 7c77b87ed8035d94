"""The derived figures of a case on the CPU: the ratio to baseline is the time ratio scaled by the
work model, the baseline against itself is exactly 1, and the run's processes share one record."""

import json
import math

import pytest

from variantbench import cases, check_workers, metrics
from variantbench.timing import BlockPlan

PLAN = BlockPlan(rounds=2, block_ms=2.0, settle_ms=0.0)


def test_the_baseline_against_itself_is_exactly_one_and_has_no_power_readings_on_the_cpu():
    case = cases.resolve("attention", "gqa_8", "sdpa", "tiny-s128", "cpu")
    record = metrics.metrics(case, plan=PLAN)
    assert record["ratio_to_baseline"] == 1.0 and record["time_ratio"] == 1.0
    assert record["baseline_ms"] == record["ms"]
    assert math.isnan(record["sm_clock_mhz"]) and math.isnan(record["baseline_throttle"])


def test_ratio_to_baseline_is_the_time_ratio_per_useful_work():
    """A sliding window does a fraction of causal's work: its cost per useful work is its time ratio
    over that fraction (compute-bound at these shapes on the CPU's measured peaks, or memory-bound:
    either way the floor times' ratio)."""
    from variantbench.catalog import family
    from variantbench.device import measured_peaks

    case = cases.resolve("attention", "sliding_window_1024", "sdpa", "tiny-s128", "cpu")
    record = metrics.metrics(case, plan=PLAN)
    fam, peaks = family("attention"), measured_peaks("cpu")
    problem = fam.make_problem(case.variant, case.shape, device="cpu", dtype=case.dtype, seed=0)
    base_variant, _ = fam.baseline
    side = metrics.Side(case.variant, problem, None)
    base = metrics.Side(base_variant, fam.make_problem(base_variant, case.shape, device="cpu", dtype=case.dtype,
                                                       seed=0), None)
    work_factor = base.floor_ms(fam.work, peaks) / side.floor_ms(fam.work, peaks)
    assert record["ratio_to_baseline"] == pytest.approx(record["time_ratio"] * work_factor)
    assert record["time_ratio"] == pytest.approx(record["ms"] / record["baseline_ms"])
    assert record["ratio_standard_error"] >= 0


def test_a_run_computes_a_case_once_and_its_processes_read_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("VARIANTBENCH_RUN_DIR", str(tmp_path))
    case = cases.resolve("attention", "causal", "sdpa", "tiny-s128", "cpu")
    first = metrics.metrics(case, plan=PLAN)
    (memo,) = tmp_path.glob("metrics-*.json")
    planted = dict(first, ms=123.0)
    memo.write_text(json.dumps(planted))
    assert metrics.metrics(case, plan=PLAN)["ms"] == 123.0  # read, not measured again


def test_a_case_found_unpreparable_is_remembered_and_never_prepared_again(tmp_path, monkeypatch):
    """Flex refusing MLA's absorbed decode took ~10 s to fail, in each of 12 track processes of an
    H200 default run: the first failure goes into the run's memo, and every later benchmark skips."""
    monkeypatch.setenv("VARIANTBENCH_RUN_DIR", str(tmp_path))
    case = cases.resolve("attention", "gqa_8", "sdpa", "tiny-s128", "cpu")
    prepares = []

    def refusing(case, **kwargs):
        prepares.append(case.name)
        raise cases.UnsupportedWhenPrepared("the compiler found no config")

    monkeypatch.setattr(metrics, "prepare_checked", refusing)
    with pytest.raises(cases.UnsupportedWhenPrepared, match="no config"):
        metrics.metrics(case, plan=PLAN)
    with pytest.raises(cases.UnsupportedWhenPrepared, match="no config"):
        metrics.metrics(case, plan=PLAN)
    with pytest.raises(NotImplementedError, match="no config"):  # asv's skip, in a forward's setup
        metrics.prepare_remembered(case)
    assert prepares == [case.name]


def test_the_precheck_remembers_what_it_found_unpreparable_for_the_run(tmp_path, monkeypatch):
    ordinary = check_workers.check_one(cases.resolve("attention", "gqa_8", "sdpa", "tiny-decode-kv256", "cpu"),
                                       backward=False)
    assert ordinary.status == "ok" and not ordinary.unpreparable
    case = cases.resolve("attention", "gqa_8", "sdpa", "tiny-s128", "cpu")

    def refusing(case, **kwargs):
        raise cases.UnsupportedWhenPrepared("shared memory: 336 KiB needed")

    monkeypatch.setattr(cases, "prepare_checked", refusing)
    result = check_workers.check_one(case, backward=False)
    assert result.status == "skip" and result.unpreparable == "shared memory: 336 KiB needed"
    metrics.remember_unsupported(result.case, result.unpreparable, tmp_path)
    monkeypatch.setenv("VARIANTBENCH_RUN_DIR", str(tmp_path))
    with pytest.raises(cases.UnsupportedWhenPrepared, match="336 KiB"):
        metrics.metrics(case, plan=PLAN)


def test_a_decode_step_is_timed_for_its_ratio_as_asv_times_it_and_the_rest_eagerly(monkeypatch):
    """On a GPU a decode step's side of a ratio (and of `try`) is replay.for_case's call, the graph
    replays asv's body times; a prefill's side, and any side on the CPU, is the call itself."""
    import types

    import torch

    from variantbench import replay

    built = []

    def for_case(case, problem, call):
        built.append(case.shape.name)
        return "replayed", None

    monkeypatch.setattr(replay, "for_case", for_case)
    on_gpu = types.SimpleNamespace(device=torch.device("cuda"))
    on_cpu = types.SimpleNamespace(device=torch.device("cpu"))

    def call():
        return None

    def side(family, variant, shape, problem):
        case = cases.Case(family, cases.family(family).variant(variant), cases.family(family).implementation("reference"),
                          cases.family(family).shape(shape), problem.device.type)
        return metrics.timed_as_served(case, problem, call)

    assert side("paged", "gqa_decode", "llama-3-8b-paged16-b1-kv128k", on_gpu) == "replayed"
    assert side("linear", "gated_deltanet", "qwen3-next-decode-b64", on_gpu) == "replayed"
    assert side("attention", "gqa_8", "llama-3-8b-s4k", on_gpu) is call
    assert side("linear", "gated_deltanet", "tiny-linear-decode-b3", on_cpu) is call
    assert built == ["llama-3-8b-paged16-b1-kv128k", "qwen3-next-decode-b64"]


def test_try_times_the_call_a_decode_step_is_served_by(monkeypatch):
    """`try` builds each side through metrics.timed_as_served (here a stand-in that marks the call)."""
    from variantbench import trying

    served = []

    def timed_as_served(case, problem, call):
        served.append(case.name)
        return call

    monkeypatch.setattr(metrics, "timed_as_served", timed_as_served)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    fam = cases.family("linear")
    tried = trying._tried(fam, fam.variant("gated_deltanet"), fam.implementation("triton"),
                          fam.shape("tiny-linear-decode-b3"), "cpu", lambda line: None, gradients=True)
    assert tried.status == "ok" and served == ["linear/gated_deltanet/triton/tiny-linear-decode-b3"]


def test_the_case_its_baseline_and_its_reference_are_each_timed_as_served(monkeypatch):
    """metrics gives timed_as_served each side with its own case (a decode step's copies for rotated
    inputs are prepared by that side's implementation), the reference's too: timed one way against
    the case's, its speedup would count launch gaps only one side pays."""
    served = []

    def timed_as_served(case, problem, call):
        served.append(case.implementation.name)
        return call

    monkeypatch.setattr(metrics, "timed_as_served", timed_as_served)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("VARIANTBENCH_RUN_DIR", raising=False)
    case = cases.resolve("paged", "gqa_decode", "triton", "tiny-paged4-b3-mixed37", "cpu")
    result = metrics.metrics(case)
    assert served == ["triton", "sdpa", "reference"]  # the case, its baseline (SDPA), the reference
    assert result["speedup_over_reference"] > 0 and result["ratio_to_baseline"] > 0
