"""How a case's time and SM clock drift under sustained back-to-back load, in bins (on a GPU):

    python3 tools/probe_clock_drift.py FAMILY VARIANT IMPL SHAPE [--seconds 6] [--bin-ms 100]

Each bin runs the case's call back to back for about BIN_MS, synchronised at both ends, and prints
its mean ms a call beside the NVML readings taken inside it (SM clock, power, temperature, throttle
reasons). Then the GPU idles 2 s and a second pass of 1 s shows how much it recovered. Session 19: the
MoE gates' DeepSeek-V3 prefill samples ran 10.1-10.5 ms for their first four, 11.3-12.7 after (H200),
a drift asv's 0.5 s warm-up did not cover.
"""

import argparse
import statistics
import sys
import time

import torch

from variantbench import cases, power
from variantbench.catalog import Unsupported


def refuse(message):
    """Bad input or a missing GPU: one line on stderr, exit 2 (the project's code for it)."""
    print(f"probe_clock_drift: {message}", file=sys.stderr)
    raise SystemExit(2)


def temperature(sampler):
    nvml = sampler._pynvml
    return nvml.nvmlDeviceGetTemperature(sampler._handle, nvml.NVML_TEMPERATURE_GPU)


def run_bins(call, sampler, seconds, bin_ms, label):
    start = time.perf_counter()
    print(f"{label}: {'s':>5s} {'calls':>5s} {'ms a call':>10s} {'MHz':>6s} {'W':>5s} {'C':>3s} throttle")
    while time.perf_counter() - start < seconds:
        torch.cuda.synchronize()
        t0, calls = time.perf_counter(), 0
        while (time.perf_counter() - t0) * 1e3 < bin_ms:
            call()
            calls += 1
            if calls % 4 == 0:  # the host runs ahead of the GPU: let the bin's clock catch up
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        state = sampler.windows([(t0, t1)])
        mhz, watts, names = ((state.sm_clock_mhz, state.power_w, ",".join(power.reason_names(state.throttle_mask)))
                             if state else (float("nan"), float("nan"), "-"))
        print(f"{'':{len(label)}s}  {t0 - start:5.2f} {calls:5d} {(t1 - t0) * 1e3 / calls:10.4f} {mhz:6.0f} "
              f"{watts:5.0f} {temperature(sampler):3d} {names or '-'}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family")
    parser.add_argument("variant")
    parser.add_argument("implementation")
    parser.add_argument("shape")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--bin-ms", type=float, default=100.0)
    args = parser.parse_args()
    try:  # a misspelt name says so before anything needs the GPU
        case = cases.resolve(args.family, args.variant, args.implementation, args.shape, "cuda")
    except Unsupported as why:
        refuse(why)
    if not torch.cuda.is_available():
        refuse("needs a CUDA GPU; none is visible")
    _, call, _ = cases.prepare_checked(case)
    with power.Sampler(torch.device("cuda", torch.cuda.current_device())) as sampler:
        if sampler.unavailable:
            refuse(sampler.unavailable)
        time.sleep(2.0)  # start from idle, as a benchmark's process does
        run_bins(call, sampler, args.seconds, args.bin_ms, f"{args.variant}/{args.implementation}@{args.shape}")
        time.sleep(2.0)
        run_bins(call, sampler, 1.0, args.bin_ms, "after 2 s idle")
    idle = [r[1] for r in sampler.readings[-5:]]
    print(f"last readings' clock: {statistics.fmean(idle):.0f} MHz")


if __name__ == "__main__":
    main()
