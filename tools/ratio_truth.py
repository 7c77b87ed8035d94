"""The suite's ratio to baseline against independent do_bench medians, on the GPU, after a run:
    variantbench run --shape llama-3-8b-s4k --bench 'AttentionForward\\.|AttentionMetrics|AttentionForwardPower' ...
    python tools/ratio_truth.py [variant:implementation ...] [--shape S]
For each case: the recorded track_ratio_to_baseline; the ratio of the recorded time_forward medians
(the report's ms column) per useful work; and the ratio of triton.testing.do_bench medians of the
same two calls, measured now. All three should agree within 3%. Also prints the recorded SM clocks.
With --settle, first prints how a call's time settles after the baseline ran (25 ms bins).
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from variantbench import cases, results  # noqa: E402
from variantbench.catalog import family  # noqa: E402
from variantbench.device import identity, machine_name, measured_peaks  # noqa: E402
from variantbench.metrics import Side  # noqa: E402
from variantbench.power import Sampler  # noqa: E402


def settle(after, call, sampler, ms=400.0, bin_ms=25.0):
    """Per-call times of `call` in bins after `after` ran for 300 ms: how long the clock takes to move."""
    per = triton.testing.do_bench(call, warmup=5, rep=20)
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        after()
    events = []
    for _ in range(int(ms / per)):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        stop.record()
        events.append((start, stop))
    torch.cuda.synchronize()
    t, bins = 0.0, {}
    for start, stop in events:
        elapsed = start.elapsed_time(stop)
        bins.setdefault(int(t // bin_ms), []).append(elapsed)
        t += elapsed
    return " ".join(f"{statistics.fmean(v):.3f}" for _, v in sorted(bins.items()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", nargs="*", default=["gqa_8:triton", "causal:triton", "sliding_window_1024:triton",
                                                     "full:triton", "document:flex"])
    parser.add_argument("--shape", default="llama-3-8b-s4k")
    parser.add_argument("--settle", action="store_true")
    args = parser.parse_args()
    fam, peaks = family("attention"), measured_peaks("cuda")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    path = results.results_file(ROOT / "reports/results", machine_name(identity("cuda")), sha)
    frame = results.load_file(path) if path else None

    def recorded(benchmark, variant, impl):
        if frame is None:
            return float("nan")
        rows = frame[(frame.benchmark == f"bench_attention.{benchmark}") & (frame.params == (variant, impl, args.shape))]
        return float(rows.value.iloc[0]) if len(rows) and rows.value.iloc[0] is not None else float("nan")

    base_problem, base, _ = cases.prepare_checked(cases.resolve("attention", "gqa_8", "sdpa", args.shape, "cuda"))
    base_side = Side(fam.variant("gqa_8"), base_problem, base)
    base_bench = triton.testing.do_bench(base, warmup=100, rep=1000, return_mode="median")
    base_ms = recorded("AttentionForward.time_forward", "gqa_8", "sdpa") * 1e3
    print(f"results: {path}; baseline via {base.backend}: do_bench {base_bench:.4f} ms, asv {base_ms:.4f} ms")
    print(f"{'case':30} {'track':>7} {'ms-col':>7} {'do_bench':>8} {'track/db':>8} {'mscol/db':>8} "
          f"{'asv ms':>7} {'db ms':>7} {'clock':>6} {'b-clock':>7} {'fwd clock':>9}")
    with Sampler(torch.device("cuda", 0)) as sampler:
        for pair in args.pairs:
            variant, impl = pair.split(":")
            problem, call, _ = cases.prepare_checked(cases.resolve("attention", variant, impl, args.shape, "cuda"))
            work = base_side.floor_ms(fam.work, peaks) / Side(fam.variant(variant), problem, call).floor_ms(fam.work, peaks)
            if args.settle:
                print(f"  {pair} after the baseline, ms per call per 25 ms: {settle(base, call, sampler)}")
                print(f"  baseline after {pair}:                       {settle(call, base, sampler)}")
            bench = triton.testing.do_bench(call, warmup=100, rep=1000, return_mode="median")
            again = triton.testing.do_bench(base, warmup=100, rep=1000, return_mode="median")
            truth = bench / statistics.fmean([base_bench, again]) * work
            track = recorded("AttentionMetrics.track_ratio_to_baseline", variant, impl)
            asv_ms = recorded("AttentionForward.time_forward", variant, impl) * 1e3
            ms_col = asv_ms / base_ms * work
            print(f"{pair:30} {track:7.3f} {ms_col:7.3f} {truth:8.3f} {track / truth - 1:+8.1%} {ms_col / truth - 1:+8.1%} "
                  f"{asv_ms:7.4f} {bench:7.4f} {recorded('AttentionMetrics.track_sm_clock_mhz', variant, impl):6.0f} "
                  f"{recorded('AttentionMetrics.track_baseline_sm_clock_mhz', variant, impl):7.0f} "
                  f"{recorded('AttentionForwardPower.track_sm_clock_mhz', variant, impl):9.0f}", flush=True)


if __name__ == "__main__":
    main()
