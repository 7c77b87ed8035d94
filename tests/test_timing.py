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
