"""Independent check of asv medians on the GPU, right after the run that recorded them:
    python tools/asv_truth.py RESULTS.json BENCHMARK [--shape S ...] [--implementation I ...] [--most N]
BENCHMARK is a timed benchmark of the results file (bench_block.BlockForward.time_forward, or a
forward+backward one: ...ForwardBackward.time_forward_backward). Every case it recorded (up to --most)
is prepared again apart from the suite and timed as tools/try_truth.py times a try's: do_bench's
median, or a CUDA-graph loop for decode steps and calls under 50 us; a forward+backward with the
suite's fixed output gradient. Prints the median, the independent figure and their difference.
A reference speedup (...ReferenceSpeedup.track_speedup_over_reference) is checked the same way: the
case and its family's reference prepared apart and timed so, the second over the first.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from try_truth import independent_ms  # noqa: E402
from variantbench import cases, results, timing  # noqa: E402


def refuse(message):
    """Bad input: one line on stderr, exit 2 (the project's code for it)."""
    print(f"asv_truth: {message}", file=sys.stderr)
    raise SystemExit(2)


def recorded(results_file, benchmark):
    """(variant, implementation, shape, median ms) of every case the benchmark recorded, through the
    suite's own reader (variantbench.results); one line and exit 2 for a file it cannot read or a
    benchmark the file does not have."""
    try:
        frame = results.load_file(Path(results_file))
    except results.BadResults as why:
        refuse(why)
    if benchmark not in set(frame.benchmark):
        timed = sorted(name for name in set(frame.benchmark) if ".time_" in name)
        refuse(f"{results_file} has no benchmark {benchmark!r}; its timed ones: {', '.join(timed)}")
    rows = frame[(frame.benchmark == benchmark) & frame.value.notna()]
    scale = 1.0 if benchmark.endswith(SPEEDUP) else 1e3  # a speedup is a ratio; times are recorded in s
    return [(*params, value * scale) for params, value in zip(rows.params, rows.value)]


SPEEDUP = "track_speedup_over_reference"


def timed_apart(family, variant, implementation, shape, backward):
    """(ms, how) of the case prepared again apart from the suite. how is "eager" for a decode step that
    would not capture into a CUDA graph here: the suite replays decode steps as graphs where they capture
    (session 21: torch.compile's Mixtral decode, 1.190 ms replayed there, 2.079 eager here), so that
    figure is not the suite's kind of timing."""
    case = cases.resolve(family, variant, implementation, shape, "cuda")
    problem, call, _ = cases.prepare_checked(case, requires_grad=backward)
    decode = not backward and timing.decode_step(case.shape)
    try:
        if backward:
            ms, how, _ = independent_ms(cases.forward_backward(problem, call))
        else:
            ms, how, _ = independent_ms(call, decode)
    finally:
        del problem, call
        torch.cuda.empty_cache()
    return ms, "eager" if decode and how != "graph" else how


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("benchmark")
    parser.add_argument("--shape", action="append")
    parser.add_argument("--implementation", action="append")
    parser.add_argument("--most", type=int, default=40)
    args = parser.parse_args()
    family = args.benchmark.split(".")[0].removeprefix("bench_")
    backward = args.benchmark.endswith("time_forward_backward")
    rows = [r for r in recorded(args.results, args.benchmark)
            if (not args.shape or r[2] in args.shape) and (not args.implementation or r[1] in args.implementation)]
    speedup = args.benchmark.endswith(SPEEDUP)
    unit = "x" if speedup else "ms"
    print(f"{'case':64} {'asv ' + unit:>10} {'indep ' + unit:>10} {'how':>8} {'diff':>7}")
    worst, timed, unlike = 0.0, 0, 0
    for variant, implementation, shape, asv_figure in rows[:args.most]:
        name = f"{family}/{variant}/{implementation}@{shape}{'/backward' if backward else ''}"
        try:
            figure, how = timed_apart(family, variant, implementation, shape, backward)
            if speedup:  # the reference's time over the case's; unlike if either side could not be graphed
                reference, reference_how = timed_apart(family, variant, "reference", shape, backward)
                figure, how = reference / figure, "eager" if "eager" in (how, reference_how) else how
        except Exception as error:  # noqa: BLE001 - one line per case that cannot be re-timed
            print(f"{name:64} {asv_figure:10.4f} {'-':>10} {'error':>8}  {type(error).__name__}: {cases.first_line(error)}")
            continue
        note = ""
        if how == "eager":  # unlike timings: left out of the largest difference
            unlike, note = unlike + 1, "  (unlike: no CUDA graph captured here)"
        else:
            worst, timed = max(worst, abs(asv_figure / figure - 1)), timed + 1
        print(f"{name:64} {asv_figure:10.4f} {figure:10.4f} {how:>8} {asv_figure / figure - 1:+7.1%}{note}", flush=True)
    if not timed:  # every case refused, failed or unlike: no agreement to report
        print(f"largest difference: none re-timed alike, of {min(len(rows), args.most)} cases")
        raise SystemExit(1)
    print(f"largest difference: {worst:.1%} over {timed} of {min(len(rows), args.most)} cases"
          + (f" ({unlike} more timed unlike the suite)" if unlike else ""))


if __name__ == "__main__":
    main()
