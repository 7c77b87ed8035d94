"""Timers. GPU work is asynchronous: every figure here comes from CUDA events, or from a host clock
read only after a synchronize."""

import math
import statistics
import time

# asv_runner >= 0.3 times one call per sample whenever a benchmark has a setup (asv#966). One 1 ms
# kernel between two synchronisations measured 8% over do_bench on an H100 (launch and sync latency
# exposed); 45 back-to-back calls per sample, 2-5%. So the timed body runs a batch of calls and the
# timers below divide the clock by the batch size: asv records per-call time, samples and statistics.
_calls_per_sample = 1
SAMPLE_MS = 20.0  # per sample; launch and sync overheads (~50 us) stay under 0.3% of it


def batched(call, device):
    """A body running `call` enough times back to back to fill SAMPLE_MS, and set the timers' divisor.
    One benchmark runs per asv process, so one divisor per process. A call that runs its operation
    several times (`call.repeats`, a collective repeated to amortise dispatching it to the other ranks)
    is divided by those too: every figure is per operation."""
    global _calls_per_sample
    repeats = getattr(call, "repeats", 1)
    calls_needed = max(1, math.ceil(SAMPLE_MS / (median_ms(call, device, rounds=5) * repeats)))
    _calls_per_sample = calls_needed * repeats
    calls = range(calls_needed)

    def body():
        for _ in calls:
            call()

    return body


def cuda_sync_timer():
    """asv `timer` for CUDA benchmarks: synchronises, so a sample covers the GPU work of its calls;
    scaled to one call of the batch (see `batched`)."""
    import torch

    torch.cuda.synchronize()
    return time.perf_counter() / _calls_per_sample


def cpu_timer():
    return time.perf_counter() / _calls_per_sample


def interleaved_ms(calls: dict, device, rounds: int = 25, warmup: int = 3, sample_ms: float | None = None) -> dict:
    """{name: [ms per call, one value per round]} for several calls measured side by side.

    Each round runs every call in an order rotated per round, so clock and thermal drift hit all of
    them alike; ratios of their medians are then fair. With `sample_ms`, each call runs as a batch
    filling about that long between its two events (as the asv body does, see `batched`); without,
    once, which exposes launch latency (one synchronised 1 ms call read 8% slow on an H100).
    """
    import torch

    names = list(calls)
    repeats = {name: getattr(calls[name], "repeats", 1) for name in names}  # see `batched`
    for _ in range(warmup):
        for name in names:
            calls[name]()
    batch = dict.fromkeys(names, 1)
    if sample_ms is not None:
        for name in names:
            single = statistics.median(interleaved_ms({name: calls[name]}, device, rounds=3, warmup=0)[name])
            batch[name] = max(1, math.ceil(sample_ms / (single * repeats[name])))
    samples = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            call, n = calls[name], batch[name]
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(n):
                    call()
                end.record()
                end.synchronize()
                samples[name].append(start.elapsed_time(end) / (n * repeats[name]))
            else:
                t0 = time.perf_counter()
                for _ in range(n):
                    call()
                samples[name].append((time.perf_counter() - t0) * 1e3 / (n * repeats[name]))
    return samples


def median_ms(call, device, rounds: int = 25) -> float:
    return statistics.median(interleaved_ms({"call": call}, device, rounds=rounds)["call"])


def spread(samples) -> float:
    """Relative noise of a sample list: interquartile range over median."""
    q = statistics.quantiles(samples, n=4)
    return (q[2] - q[0]) / statistics.median(samples)
