"""Independent check of `variantbench try` figures, on the GPU, right after the try runs:
    python tools/try_truth.py [--fused-only] TRY.json [TRY.json ...]
--fused-only leaves out the eager references (seconds each to re-time at long shapes, and never a
fused implementation's figure).
For every implementation the JSON timed (B's and A's), the same call is prepared again and timed apart
from the suite: triton.testing.do_bench's median, or for calls under 50 us (where launch overhead is
most of a back-to-back loop, and the suite replays a CUDA graph) and for decode steps (which the suite
replays as graphs at any length) do_bench_cudagraph's median. Calls
under 1 ms (decode) are also timed as a loop of CUDA-graph replays (do_bench_cudagraph), the way a
serving engine runs them, in a column of their own.
Prints the suite's ms, the independent ms and their difference; they should agree within 5%.
"""

import json
import sys
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from variantbench import cases, timing  # noqa: E402

GRAPH_BELOW_MS = 0.05
GRAPH_LOOP_BELOW_MS = 1.0  # decode calls: issue 15 asks their figures beside an independent graph loop


def independent_ms(call, decode=False) -> tuple[float, str, float | None]:
    """(ms, how, ms of a graph loop or None): the figure compared, and for a decode call the graph loop.
    A decode step (timing.decode_step) is compared with the graph loop: the suite replays it as one."""
    quick = triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median")
    loop = graph_loop_ms(call) if quick < GRAPH_LOOP_BELOW_MS or decode else None
    if loop is not None and (quick < GRAPH_BELOW_MS or decode):
        return loop, "graph", loop
    return triton.testing.do_bench(call, warmup=100, rep=1000, return_mode="median"), "do_bench", loop


def graph_loop_ms(call):
    """do_bench_cudagraph's median, or None for a call that cannot be captured (one that synchronises
    with the host, which the suite times eagerly too)."""
    try:
        return triton.testing.do_bench_cudagraph(call, rep=500, return_mode="median")
    except RuntimeError:
        torch.cuda.synchronize()
        return None


def timed_rows(doc):
    """(family, variant, implementation, shape, suite ms) of every timed call in one try document."""
    against = doc["against"]
    for at in doc["shapes"]:
        for row in at["implementations"]:
            if row["status"] == "ok" and row["ms"] is not None:
                yield doc["family"], doc["variant"], row["implementation"], at["shape"], row["ms"]
        family, variant, shape = doc["family"], against, at["shape"]
        if "/" in against:  # another family's variant at its own shape: FAMILY/VARIANT@SHAPE
            family, rest = against.split("/", 1)
            variant, _, shape = rest.partition("@")
        for theirs in at["against"]["implementations"]:
            if theirs["ms"] is not None and (family, variant) != (doc["family"], doc["variant"]):
                yield family, variant, theirs["implementation"], shape, theirs["ms"]


def main(paths, fused_only=False):
    print(f"{'case':72} {'suite ms':>10} {'indep ms':>10} {'how':>8} {'diff':>7} {'graph ms':>10} {'diff':>7}")
    worst = 0.0
    for path in map(Path, paths):
        if not path.exists():  # a `try` cut by its time limit writes none; the other files still count
            print(f"{str(path):72} no such file: its try wrote no verdict")
            continue
        for family, variant, impl, shape, suite_ms in timed_rows(json.loads(path.read_text())):
            name = f"{family}/{variant}/{impl}@{shape}"
            if fused_only and impl == "reference":
                continue
            try:
                case = cases.resolve(family, variant, impl, shape, "cuda")
                _, call, _ = cases.prepare_checked(case)
                ms, how, loop = independent_ms(call, timing.decode_step(case.shape))
            except Exception as error:  # noqa: BLE001 - one line per case that cannot be re-timed
                print(f"{name:72} {suite_ms:10.4f} {'-':>10} {'error':>8}  {type(error).__name__}: "
                      f"{cases.first_line(error)}")
                continue
            finally:
                torch.cuda.empty_cache()
            worst = max(worst, abs(suite_ms / ms - 1))
            graph = "" if loop is None else f" {loop:10.4f} {suite_ms / loop - 1:+7.1%}"
            print(f"{name:72} {suite_ms:10.4f} {ms:10.4f} {how:>8} {suite_ms / ms - 1:+7.1%}{graph}", flush=True)
    print(f"largest difference: {worst:.1%}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main([a for a in args if a != "--fused-only"], fused_only="--fused-only" in args)
