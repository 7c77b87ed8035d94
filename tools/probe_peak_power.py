"""What the suite's peaks draw: the power of its peak matmul and peak copy (variantbench.device.peak_calls,
which measured_peaks times: a bfloat16 8192^3 matmul, a 2 GiB device copy), of the idle GPU and of a GPU kept
busy doing next to nothing, on one GPU, each from NVML's energy counter:

    python3 tools/probe_peak_power.py [--seconds S]

Why: the suite's roofline takes a layer's FLOPs at the matmul peak and its bytes at the copy peak at once,
max(FLOPs / peak, bytes / bandwidth). Under a power cap that holds only where the two peaks together fit
under the cap. Where each alone already draws about the cap (an H200 holds 700 W), the tensor cores and the
memory share one energy budget. tools/moe_expert_bound.py's power floor takes the figures this prints (its
last line is the arguments): each peak's rate and power back to back, the idle power, and the busy one, every
SM spinning on the clock (`_spin`: a few integer instructions a loop), which bounds from above the fixed cost
of a GPU at work, since the spin's own instructions cost energy too; the floor is lowest, so safest, with it.
Each call runs back to back for S seconds (variantbench.power.Sampler.back_to_back); the idle GPU is read for
one second first, as ten sleeps of 0.1 s.
"""

import sys
import time
from pathlib import Path

import click
import torch
import triton
from triton.language.extra.cuda import globaltimer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from variantbench.device import peak_calls  # noqa: E402
from variantbench.power import Sampler  # noqa: E402
from variantbench.timing import median_ms  # noqa: E402

SPIN_NS = 1_000_000  # a spin launch's length: 1 ms, long beside its launch, short beside the counter's second


@triton.jit
def _spin(ns):
    """Every program reads the global timer until `ns` nanoseconds have passed since its start."""
    start = globaltimer()
    while globaltimer() - start < ns:
        pass


@click.command(help=__doc__)
@click.option("--seconds", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="how long each call runs back to back under NVML")
def main(seconds):
    if not torch.cuda.is_available():
        raise click.UsageError("needs a CUDA GPU; none is visible")
    device = torch.device("cuda", torch.cuda.current_device())
    sampler = Sampler(device)
    if sampler.unavailable or sampler.energy_mj() is None:
        raise click.UsageError(sampler.unavailable or "this GPU keeps no energy counter")
    # the idle GPU: a second of sleeps under the same readings as the calls
    idle_ms, idle, idle_mj = sampler.back_to_back(lambda: time.sleep(0.1), 10, lambda: None)
    idle_w = idle_mj / idle_ms
    print(f"idle: {idle.sm_clock_mhz:.0f} MHz, {idle_w:.0f} W", flush=True)
    peaks = peak_calls("cuda")
    # eight programs of four warps an SM: every SM's four schedulers have eight warps to issue from
    spin_grid = (8 * torch.cuda.get_device_properties(device).multi_processor_count, )
    calls = {"matmul": (peaks.matmul, peaks.flops, "FLOP"), "copy": (peaks.copy, peaks.nbytes, "byte"),
             "busy": (lambda: _spin[spin_grid](SPIN_NS, num_warps=4), None, None)}
    figures = {}
    for name, (call, work, unit) in calls.items():
        ms = median_ms(call, device)
        loop_ms, state, energy = sampler.back_to_back(call, max(10, round(seconds * 1e3 / ms)), torch.cuda.synchronize)
        watts = energy / loop_ms
        line = (f"{name}: {ms:.3f} ms (median), back to back {loop_ms:.3f} ms a call, {state.sm_clock_mhz:.0f} MHz "
                f"({', '.join(state.throttle) or 'no throttle'}), {energy:.1f} mJ a call: {watts:.0f} W (sampled "
                f"{state.power_w:.0f} W)")
        if work:
            rate = work / loop_ms / 1e9  # per second / 1e12: TFLOP/s or TB/s
            line += f", {rate:.4g}e12 {unit}/s, {energy * 1e9 / work:.3g} pJ a {unit}"
            figures[name] = f"{rate:.4g},{watts:.0f}"
        else:
            figures[name] = f"{watts - idle_w:.0f}"
        print(line, flush=True)
    print(f"moe_expert_bound.py --matmul-peak {figures['matmul']} --copy-peak {figures['copy']} "
          f"--idle-watts {idle_w:.0f} --busy-watts {figures['busy']}")


if __name__ == "__main__":
    main()
