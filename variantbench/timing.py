"""Timers. GPU work is asynchronous: every figure here comes from CUDA events, or from a host clock
read only after a synchronize."""

import statistics
import time


def cuda_sync_timer():
    """asv `timer` for CUDA benchmarks: asv reads it before and after `number` calls, so syncing here
    makes each sample cover the GPU work of those calls, and asv keeps its samples and statistics."""
    import torch

    torch.cuda.synchronize()
    return time.perf_counter()


def interleaved_ms(calls: dict, device, rounds: int = 25, warmup: int = 3) -> dict:
    """{name: [ms per round]} for several calls measured side by side in one process.

    Each round runs every call once, in an order rotated per round, so clock and thermal drift hit
    all of them alike; ratios of their medians are then fair.
    """
    import torch

    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    samples = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                calls[name]()
                end.record()
                end.synchronize()
                samples[name].append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                calls[name]()
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def median_ms(call, device, rounds: int = 25) -> float:
    return statistics.median(interleaved_ms({"call": call}, device, rounds=rounds)["call"])


def spread(samples) -> float:
    """Relative noise of a sample list: interquartile range over median."""
    q = statistics.quantiles(samples, n=4)
    return (q[2] - q[0]) / statistics.median(samples)
