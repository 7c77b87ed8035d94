"""Why does the suite's ratio to baseline disagree with the ratio of independent medians?

For each (variant, implementation) against the attention baseline (gqa_8 through SDPA) at one shape,
times both calls five ways in one process, with the SM clock NVML saw during each side's samples:
  do_bench     triton.testing.do_bench of each alone (an L2 flush before every call), medians
  batches      the suite's way until now: 20 ms batches of each, interleaved round by round
  percall      one call each, alternating, an L2 flush before every call, queued (no host sync)
  blocks       300 ms of one, then 300 ms of the other, four times; the first 100 ms of a block dropped
  alone        asv's way: 20 ms batches of one call back to back, synchronised, after a warm-up
Prints ms, the ratio per useful work and each side's mean clock.
    python tools/ratio_probe.py [variant:implementation ...] [--shape SHAPE]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from variantbench import cases  # noqa: E402
from variantbench.catalog import family  # noqa: E402
from variantbench.device import measured_peaks  # noqa: E402
from variantbench.power import Sampler  # noqa: E402

FLUSH = torch.empty(256 * 2**20 // 4, dtype=torch.int32, device="cuda")


def do_bench(call, sampler):
    t0 = time.perf_counter()
    ms = triton.testing.do_bench(call, warmup=100, rep=1000, return_mode="median")
    return ms, sampler.window(t0, time.perf_counter())


def batch_of(call, ms=20.0):
    single = do_bench_quick(call)
    return max(1, round(ms / single))


def do_bench_quick(call):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / 5


def batches(calls, sampler, rounds=25):
    names = list(calls)
    n = {k: batch_of(calls[k]) for k in names}
    samples, windows = {k: [] for k in names}, {k: [] for k in names}
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            for _ in range(n[name]):
                calls[name]()
            end.record()
            end.synchronize()
            windows[name].append((t0, time.perf_counter()))
            samples[name].append(start.elapsed_time(end) / n[name])
    return samples, windows


def percall(calls, sampler, rounds=200):
    names = list(calls)
    events = {k: [] for k in names}
    t0 = time.perf_counter()
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:
            FLUSH.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            calls[name]()
            end.record()
            events[name].append((start, end))
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    samples = {k: [s.elapsed_time(e) for s, e in v] for k, v in events.items()}
    return samples, {k: [(t0, t1)] for k in names}


def blocks(calls, sampler, rounds=4, block_ms=300.0, drop_ms=100.0):
    names = list(calls)
    samples, windows = {k: [] for k in names}, {k: [] for k in names}
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:
            per = do_bench_quick(calls[name])
            count, skip = max(3, round(block_ms / per)), round(drop_ms / per)
            events = []
            t0 = time.perf_counter()
            for _ in range(count):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                calls[name]()
                end.record()
                events.append((start, end))
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            samples[name] += [s.elapsed_time(e) for s, e in events[skip:]]
            windows[name].append((t0 + (t1 - t0) * skip / count, t1))
    return samples, windows


def alone(calls, sampler, samples_per=10):
    out, windows = {}, {}
    for name, call in calls.items():
        n = batch_of(call)
        for _ in range(3):
            call()
        torch.cuda.synchronize()
        times = []
        t_start = time.perf_counter()
        for _ in range(samples_per):
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3 / n)
        out[name], windows[name] = times, [(t_start, time.perf_counter())]
    return out, windows


def clock(sampler, spans):
    readings = [r for r in sampler.readings if any(a <= r[0] <= b for a, b in spans)]
    return statistics.fmean(r[1] for r in readings) if readings else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", nargs="*", default=["gqa_8:triton", "causal:triton", "sliding_window_1024:triton",
                                                     "full:triton", "document:flex"])
    parser.add_argument("--shape", default="llama-3-8b-s4k")
    args = parser.parse_args()
    fam = family("attention")
    peaks = measured_peaks("cuda")
    print(f"peaks {peaks['tflops']:.0f} TFLOP/s {peaks['gbps']:.0f} GB/s")
    base_problem, base, _ = cases.prepare_checked(cases.resolve("attention", "gqa_8", "sdpa", args.shape, "cuda"))
    print(f"baseline gqa_8/sdpa via {base.backend}")

    def floor_ms(variant, problem):
        flops, nbytes = fam.work(variant, problem)
        return max(flops / peaks["tflops"] / 1e9, nbytes / peaks["gbps"] / 1e6)

    base_floor = floor_ms(fam.variant("gqa_8"), base_problem)
    print(f"{'pair':34} {'method':9} {'case ms':>8} {'base ms':>8} {'t-ratio':>8} {'w-ratio':>8} "
          f"{'case MHz':>9} {'base MHz':>9}")
    with Sampler() as sampler:
        if sampler.unavailable:
            print(sampler.unavailable)
        for pair in args.pairs:
            variant, impl = pair.split(":")
            problem, call, _ = cases.prepare_checked(cases.resolve("attention", variant, impl, args.shape, "cuda"))
            work_factor = base_floor / floor_ms(fam.variant(variant), problem)
            calls = {"case": call, "base": base}
            results = {}
            c_ms, c_state = do_bench(call, sampler)
            b_ms, b_state = do_bench(base, sampler)
            results["do_bench"] = (c_ms, b_ms, c_state.sm_clock_mhz if c_state else float("nan"),
                                   b_state.sm_clock_mhz if b_state else float("nan"))
            for method in (batches, percall, blocks, alone):
                samples, windows = method(calls, sampler)
                results[method.__name__] = (statistics.median(samples["case"]), statistics.median(samples["base"]),
                                            clock(sampler, windows["case"]), clock(sampler, windows["base"]))
            for method, (cm, bm, cc, bc) in results.items():
                print(f"{pair:34} {method:9} {cm:8.4f} {bm:8.4f} {cm / bm:8.3f} {cm / bm * work_factor:8.3f} "
                      f"{cc:9.0f} {bc:9.0f}", flush=True)


if __name__ == "__main__":
    main()
