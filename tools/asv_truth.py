"""Independent check of asv medians on the GPU, right after the run that recorded them:
    python tools/asv_truth.py RESULTS.json BENCHMARK [--shape S ...] [--implementation I ...] [--most N]
BENCHMARK is a timed benchmark of the results file (bench_block.BlockForward.time_forward, or a
forward+backward one: ...ForwardBackward.time_forward_backward). Every case it recorded (up to --most)
is prepared again apart from the suite and timed as tools/try_truth.py times a try's: do_bench's
median, or a CUDA-graph loop for decode steps and calls under 50 us; a forward+backward with the
suite's fixed output gradient. Prints the median, the independent figure and their difference.
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from try_truth import independent_ms  # noqa: E402
from variantbench import cases, timing  # noqa: E402


def recorded(results_file, benchmark):
    """(variant, implementation, shape, median ms) of every case the benchmark recorded."""
    doc = json.loads(Path(results_file).read_text())
    if benchmark not in doc["results"]:
        raise SystemExit(f"{results_file}: no benchmark {benchmark!r}; it has "
                         f"{', '.join(name for name in doc['results'] if '.time_' in name)}")
    entry = dict(zip(doc["result_columns"], doc["results"][benchmark]))
    for params, value in zip(itertools.product(*entry["params"]), entry["result"]):
        if value is not None and value == value:
            yield (*(p.strip("'") for p in params), value * 1e3)


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
    print(f"{'case':64} {'asv ms':>10} {'indep ms':>10} {'how':>8} {'diff':>7}")
    worst = 0.0
    for variant, implementation, shape, asv_ms in rows[:args.most]:
        name = f"{family}/{variant}/{implementation}@{shape}{'/backward' if backward else ''}"
        try:
            case = cases.resolve(family, variant, implementation, shape, "cuda")
            problem, call, _ = cases.prepare_checked(case, requires_grad=backward)
            if backward:
                ms, how, _ = independent_ms(cases.forward_backward(problem, call))
            else:
                ms, how, _ = independent_ms(call, timing.decode_step(case.shape))
        except Exception as error:  # noqa: BLE001 - one line per case that cannot be re-timed
            print(f"{name:64} {asv_ms:10.4f} {'-':>10} {'error':>8}  {type(error).__name__}: {cases.first_line(error)}")
            continue
        finally:
            torch.cuda.empty_cache()
        worst = max(worst, abs(asv_ms / ms - 1))
        print(f"{name:64} {asv_ms:10.4f} {ms:10.4f} {how:>8} {asv_ms / ms - 1:+7.1%}", flush=True)
    print(f"largest difference: {worst:.1%}")


if __name__ == "__main__":
    main()
