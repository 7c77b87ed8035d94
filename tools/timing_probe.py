"""Does running the eager reference right before timing slow the fused kernels that follow?

do_bench of the baseline (gqa_8 through SDPA) and of our Triton kernel at llama-3-8b-s4k: fresh, then
right after 28 reference calls (what the metrics measurement does), then after 5 s idle; plus an
asv-style synchronised loop. Prints ms, SM clock and temperature for each.
"""

import subprocess
import time

import torch
import triton

from variantbench import cases
from variantbench.timing import cuda_sync_timer


def smi():
    out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    return out


def sync_loop(call, number=45, samples=10):
    times = []
    for _ in range(samples):
        t0 = cuda_sync_timer()
        for _ in range(number):
            call()
        times.append((cuda_sync_timer() - t0) / number * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    base = cases.prepare_checked(cases.resolve("attention", "gqa_8", "sdpa", "llama-3-8b-s4k", "cuda"))[1]
    ours = cases.prepare_checked(cases.resolve("attention", "gqa_8", "triton", "llama-3-8b-s4k", "cuda"))[1]
    ref = cases.prepare_checked(cases.resolve("attention", "gqa_8", "reference", "llama-3-8b-s4k", "cuda"))[1]
    print("sdpa backend", base.backend)

    def report(label):
        for name, call in (("sdpa", base), ("triton", ours)):
            bench = triton.testing.do_bench(call, warmup=100, rep=500, return_mode="median")
            loop = sync_loop(call)
            print(f"{label:22} {name:7} do_bench {bench:.4f} ms  sync loop {loop:.4f} ms  [{smi()}]", flush=True)

    report("fresh")
    for _ in range(28):
        ref()
    torch.cuda.synchronize()
    report("after reference")
    time.sleep(5)
    report("after 5 s idle")


if __name__ == "__main__":
    main()
