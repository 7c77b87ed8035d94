"""The timers asv uses report per-call time of a batch; the batch fills a sample."""

import math

import torch

from variantbench import timing


def test_batched_body_runs_enough_calls_and_the_timer_divides_by_them():
    counter = {"calls": 0}
    payload = torch.randn(256, 256)

    def call():
        counter["calls"] += 1
        return payload @ payload

    body = timing.batched(call, torch.device("cpu"))
    per_call = timing.median_ms(call, torch.device("cpu"), rounds=5)
    n = timing._calls_per_sample
    assert n >= 1
    assert n * per_call >= timing.SAMPLE_MS * 0.2  # sized from an estimate of the same call
    counter["calls"] = 0
    body()
    assert counter["calls"] == n
    import time

    assert math.isclose(timing.cpu_timer() * n, time.perf_counter(), rel_tol=1e-3)


def test_interleaved_rotates_order_and_keeps_every_sample():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    samples = timing.interleaved_ms(calls, torch.device("cpu"), rounds=3, warmup=0)
    assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
    assert order == list("abc") + list("bca") + list("cab")


def test_spread_is_relative_iqr():
    assert timing.spread([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert timing.spread([0.9, 1.0, 1.0, 1.1]) > 0.0


def test_interleaved_batches_fill_the_sample_and_report_per_call():
    counter = {"a": 0}
    payload = torch.randn(64, 64)

    def a():
        counter["a"] += 1
        return payload @ payload

    samples = timing.interleaved_ms({"a": a}, torch.device("cpu"), rounds=4, warmup=0, sample_ms=2.0)
    assert len(samples["a"]) == 4
    assert counter["a"] > 4 + 3  # batches, not single calls (3 estimate calls, then 4 rounds)
    assert all(s < 2.0 for s in samples["a"])  # per call, not per batch


def test_a_stalled_setup_writes_its_stack_to_the_progress_log(tmp_path, monkeypatch):
    """A build that blocks past the stall period leaves every thread's stack in the run's progress
    log (which `variantbench run` echoes), naming the function it blocks in; a healthy one leaves its
    ready line only."""
    import threading

    from suite import common
    from variantbench import progress

    monkeypatch.setenv("VARIANTBENCH_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(progress, "STALL_DUMP_S", 0.05)
    never_set = threading.Event()

    def blocked_collective():
        never_set.wait(0.5)  # stands in for a rendezvous that never completes
        return "built"

    assert common.once_per_process("stalled-case", blocked_collective) == "built"
    log = (tmp_path / "progress.log").read_text()
    assert "Timeout (0:00:00" in log and "blocked_collective" in log
    assert log.rstrip().splitlines()[-1].startswith("stalled-case ready in ")
    (tmp_path / "progress.log").unlink()
    assert common.once_per_process("healthy-case", lambda: "built") == "built"
    assert (tmp_path / "progress.log").read_text() == ""  # built in under 0.05 s: nothing to say
