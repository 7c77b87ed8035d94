"""Timing truth: the suite's asv figure for a forward against an independent triton.testing.do_bench
median of the same call, same process session. Run after `variantbench run` on the GPU:
    python tools/timing_truth.py [variant implementation shape ...]
Prints both figures and their difference; they should agree within 5%.
"""

import subprocess
import sys
from pathlib import Path

import triton

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from variantbench import cases, results  # noqa: E402
from variantbench.device import identity, machine_name  # noqa: E402


def main(triples):
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    frame = results.load_file(results.results_file(ROOT / "reports/results", machine_name(identity("cuda")), sha))
    forward = frame[frame.benchmark == "bench_attention.AttentionForward.time_forward"]
    print(f"{'case':50} {'asv ms':>9} {'do_bench ms':>12} {'diff':>7}")
    for variant, impl, shape in triples:
        suite_ms = float(forward[forward.params == (variant, impl, shape)].value.iloc[0]) * 1e3
        _, call, _ = cases.prepare_checked(cases.resolve("attention", variant, impl, shape, "cuda"))
        bench_ms = triton.testing.do_bench(call, warmup=100, rep=1000, return_mode="median")
        print(f"{variant + '/' + impl + '/' + shape:50} {suite_ms:9.4f} {bench_ms:12.4f} {suite_ms / bench_ms - 1:+7.1%}")


if __name__ == "__main__":
    args = sys.argv[1:] or ["causal", "sdpa", "llama-3-8b-s4k", "gqa_8", "sdpa", "llama-3-8b-s4k"]
    main([tuple(args[i:i + 3]) for i in range(0, len(args), 3)])
