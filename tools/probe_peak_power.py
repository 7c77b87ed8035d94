"""What the suite's peaks draw: the power and energy of its peak matmul and peak copy (variantbench.device
measured_peaks' calls: a bfloat16 8192^3 matmul, a 2 GiB device copy) and of the idle GPU, on one GPU:

    python3 tools/probe_peak_power.py [--seconds S]

Why: the suite's roofline takes a layer's FLOPs at the matmul peak and its bytes at the copy peak at once,
max(FLOPs / peak, bytes / bandwidth). Under a power cap that holds only where the two peaks together fit
under the cap. Where each alone already draws the cap (an H200 holds 700 W), the tensor cores and the
memory share one energy budget, and a layer's time is at least its FLOPs' energy above idle plus its
bytes' over the cap's headroom above idle: tools/moe_expert_bound.py's `--pj-flop`, `--pj-byte` and
`--idle-watts` take the "above idle" figures and the idle power printed here.
Each call runs back to back for S seconds under NVML (probe_expert_overlap.power_of); the idle GPU is read
for one second first.
"""

import sys
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_expert_overlap import power_of  # noqa: E402
from variantbench.power import Sampler  # noqa: E402
from variantbench.timing import median_ms  # noqa: E402


@click.command(help=__doc__)
@click.option("--seconds", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="how long each call runs back to back under NVML")
def main(seconds):
    if not torch.cuda.is_available():
        raise click.UsageError("needs a CUDA GPU; none is visible")
    device = torch.device("cuda", torch.cuda.current_device())
    sampler = Sampler(device)
    if sampler.unavailable:
        raise click.UsageError(sampler.unavailable)
    with sampler:
        start = time.perf_counter()
        time.sleep(1.0)
        idle = sampler.windows([(start, time.perf_counter())])
    print(f"idle: {idle.sm_clock_mhz:.0f} MHz, {idle.power_w:.0f} W", flush=True)
    gen = torch.Generator().manual_seed(0)
    n, copy_elems = 8192, 2 ** 30  # measured_peaks' sizes
    a, b = (torch.randn(n, n, generator=gen).to(device, torch.bfloat16) for _ in range(2))
    src = torch.randn(copy_elems // 4, generator=gen).to(device, torch.bfloat16).repeat(4)
    dst = torch.empty_like(src)
    calls = {"matmul": (lambda: a @ b, 2 * n ** 3, "FLOP"),
             "copy": (lambda: dst.copy_(src), 2 * src.numel() * src.element_size(), "byte")}
    for name, (call, work, unit) in calls.items():
        ms = median_ms(call, device)
        loop_ms, state, energy = power_of(call, ms, sampler, seconds)
        rate = work / loop_ms / 1e9  # per second / 1e12: TFLOP/s or TB/s
        print(f"{name}: {ms:.3f} ms (median), back to back {loop_ms:.3f} ms a call, {rate:.3g}e12 {unit}/s, "
              f"{state.sm_clock_mhz:.0f} MHz ({', '.join(state.throttle) or 'no throttle'}), {energy:.1f} mJ a "
              f"call: {energy / loop_ms:.0f} W (sampled {state.power_w:.0f} W), {energy * 1e9 / work:.3g} pJ a "
              f"{unit}, {(energy - idle.power_w * loop_ms) * 1e9 / work:.3g} above idle", flush=True)


if __name__ == "__main__":
    main()
