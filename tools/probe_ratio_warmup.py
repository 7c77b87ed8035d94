"""Does the budget ratio's warm-up (reports/pending/ratio-warmup.patch) make it steadier and truer?

For each case against the attention baseline (gqa_8 through SDPA) at one shape, in one process: the
ratio of medians from `variantbench.timing.alternating_blocks` under each plan, each repeat started
from idle (the power controller's cut at 0.8-1.0 s from idle, session 19), then do_bench medians of
the same two calls in alternating rounds. Prints each repeat's ratio, each plan's mean, spread
(max - min over the mean) and distance from do_bench's ratio, and each plan's wall time.

    python3 tools/probe_ratio_warmup.py [variant:implementation ...] [--shape S] [--repeats N] [--idle S]

Run it on a checkout whose BlockPlan has `warmup_ms` (the dropped patch: `git show
8fc7161^:reports/pending/ratio-warmup.patch`); elsewhere it says so in one line and exits 2.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from variantbench import cases, timing  # noqa: E402
from variantbench.catalog import Unsupported  # noqa: E402


def refuse(message):
    """Bad input or a missing GPU: one line on stderr, exit 2 (the project's code for it)."""
    print(f"probe_ratio_warmup: {message}", file=sys.stderr)
    raise SystemExit(2)

PLANS = {  # main's plan, and the patch's
    "3 rounds": dict(rounds=3, block_ms=500.0, settle_ms=300.0),
    "warm-up + 4": dict(rounds=4, block_ms=500.0, settle_ms=300.0, warmup_ms=1200.0),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="*", default=["gqa_8:triton", "alibi:triton"])
    parser.add_argument("--shape", default="llama-3-8b-s4k")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--idle", type=float, default=2.5, help="seconds idle before each repeat")
    args = parser.parse_args()
    pairs = [pair.split(":") for pair in args.pairs]
    try:  # a malformed or unknown name says so before anything needs the GPU
        for pair in pairs:
            if len(pair) != 2:
                raise Unsupported(f"{':'.join(pair)!r} is not variant:implementation")
            cases.resolve("attention", *pair, args.shape, "cuda")
    except Unsupported as unknown:
        refuse(unknown)
    if "warmup_ms" not in timing.BlockPlan.__dataclass_fields__:
        refuse("this checkout's BlockPlan has no warmup_ms (main dropped the plan in session 21: git show "
               "8fc7161^:reports/pending/ratio-warmup.patch)")
    if not torch.cuda.is_available():
        refuse("needs a CUDA GPU; none is visible")
    device = torch.device("cuda")
    _, base, _ = cases.prepare_checked(cases.resolve("attention", "gqa_8", "sdpa", args.shape, "cuda"))
    for variant, impl in pairs:
        pair = f"{variant}:{impl}"
        _, call, _ = cases.prepare_checked(cases.resolve("attention", variant, impl, args.shape, "cuda"))
        calls = {"case": call, "base": base}
        measured = {}  # plan: (ratios, seconds a ratio)
        for name, fields in PLANS.items():
            plan = timing.BlockPlan(**fields)
            ratios, seconds = [], []
            for _ in range(args.repeats):
                time.sleep(args.idle)
                t0 = time.perf_counter()
                blocks = timing.alternating_blocks(calls, device, plan)
                seconds.append(time.perf_counter() - t0)
                ratios.append(statistics.median(blocks.samples["case"]) / statistics.median(blocks.samples["base"]))
            measured[name] = ratios, seconds
            print(f"{pair:24s} {name:12s} " + " ".join(f"{r:.4f}" for r in ratios), flush=True)
        benches = [[triton.testing.do_bench(c, warmup=100, rep=500) for c in (call, base)] for _ in range(3)]
        truth = statistics.median(c / b for c, b in benches)
        print(f"{pair:24s} do_bench     " + " ".join(f"{c / b:.4f}" for c, b in benches) + f"  median {truth:.4f}")
        for name, (ratios, seconds) in measured.items():
            mean = statistics.fmean(ratios)
            print(f"{pair:24s} {name:12s} mean {mean:.4f} spread {(max(ratios) - min(ratios)) / mean:.2%} "
                  f"vs do_bench {mean / truth - 1:+.2%}, {statistics.fmean(seconds):.1f} s a ratio", flush=True)

if __name__ == "__main__":
    main()
