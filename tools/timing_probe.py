"""How do timing methods disagree on a power-capped GPU, and why?

The baseline (gqa_8 through SDPA) and our Triton kernel at llama-3-8b-s4k, timed three ways: do_bench
(L2 flush between calls), an asv-style synchronised back-to-back loop, and single synchronised calls
(asv with number=1). First cool; then right after 28 reference calls; then after 60 s of sustained
back-to-back load, as a long asv run puts on the card. Prints ms, SM clock, temperature, power and
throttle reasons for each. Measured on an H100 (2026-11-22): the reference does not slow what follows.
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


def single_calls(call, samples=50):
    times = []
    for _ in range(samples):
        t0 = cuda_sync_timer()
        call()
        times.append((cuda_sync_timer() - t0) * 1e3)
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
            single = single_calls(call)
            print(f"{label:16} {name:7} do_bench {bench:.4f}  loop {loop:.4f}  single {single:.4f} ms  [{smi()}]",
                  flush=True)

    report("fresh")
    for _ in range(28):
        ref()
    torch.cuda.synchronize()
    report("after reference")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 60:
        for _ in range(100):
            base()
        torch.cuda.synchronize()
    report("after 60 s load")


if __name__ == "__main__":
    main()
