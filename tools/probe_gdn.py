"""Where our Gated DeltaNet forward's time goes, kernel by kernel, beside fla's (issue 15: ours took
3.45x fla's time at qwen3-next-t16k on an H200, session 8). The kernels' own device times come from
torch.profiler, which times them apart from the suite's timers:

    python3 tools/probe_gdn.py [SHAPE ...]        (default qwen3-next-t16k; on a GPU)

Session 10 found 2.34 of our 3.30 ms in `_wy_kernel` (kernels/linear/triton_gdn.py), which inverted
each 64 x 64 chunk matrix a row at a time; it now inverts 16 x 16 blocks and merges them: 1.41 ms in
all, fla 0.946 ms. The kernel holding most of what is left names the next work.
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from variantbench import cases

CALLS = 10


def kernel_times(case):
    problem, call, _ = cases.prepare_checked(case)
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(CALLS):
            call()
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / CALLS / 1e3 for e in prof.key_averages() if e.device_time_total > 0}


def main(shapes):
    for shape in shapes:
        for implementation in ("triton", "fla"):
            case = cases.resolve("linear", "gated_deltanet", implementation, shape, "cuda")
            times = kernel_times(case)
            print(f"{shape} {implementation}: {sum(times.values()):.3f} ms a call on the device")
            for name, ms in sorted(times.items(), key=lambda kv: -kv[1])[:8]:
                print(f"  {ms:8.3f} ms  {name[:100]}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["qwen3-next-t16k"])
