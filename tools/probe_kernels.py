"""Where a case's time goes, kernel by kernel, implementation beside implementation: each kernel's own
device time from torch.profiler, apart from the suite's timers (on a GPU):

    python3 tools/probe_kernels.py FAMILY VARIANT IMPL[,IMPL...] SHAPE [SHAPE ...]
    python3 tools/probe_kernels.py linear gated_deltanet triton,fla qwen3-next-t16k qwen3-next-t64k
    python3 tools/probe_kernels.py moe softmax_topk triton,grouped_mm deepseek-v3-decode-t16-zipf

Session 10 found this way 2.34 of our Gated DeltaNet's 3.30 ms at qwen3-next-t16k in `_wy_kernel`,
whose chunk inverse went a row at a time (1.41 ms in all after the block inverse; fla 0.946 ms), and
points the next probe at our MoE router at DeepSeek-V3 decode (ours 1.27x grouped_mm there).
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from variantbench import cases
from variantbench.catalog import Unsupported

CALLS = 10
SHOWN = 8  # kernels listed per case, the slowest first


def kernel_times(case):
    _, call, _ = cases.prepare_checked(case)
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            call()
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / CALLS / 1e3 for e in prof.key_averages() if e.device_time_total > 0}


def main(family, variant, implementations, shapes):
    try:  # every name resolved before the first profile: a misspelt one costs no GPU time
        probes = [cases.resolve(family, variant, implementation, shape, "cuda")
                  for shape in shapes for implementation in implementations.split(",")]
    except Unsupported as why:
        print(f"probe_kernels: {why}", file=sys.stderr)
        return 2
    for case in probes:
        times = kernel_times(case)
        print(f"{case.shape.name} {case.implementation.name}: {sum(times.values()):.3f} ms a call on the device")
        for name, ms in sorted(times.items(), key=lambda kv: -kv[1])[:SHOWN]:
            print(f"  {ms:8.3f} ms  {name[:100]}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:4], sys.argv[4:]))
