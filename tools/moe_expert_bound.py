"""How fast could an MoE layer's routed experts run, expert by expert? A CPU bound for issue 17's "65% of
roofline" at a skewed load, from the suite's own routed load and peaks:

    python3 tools/moe_expert_bound.py [SHAPE] [--variant ROUTER] [--tflops T] [--gbps G]
        [--matmul-peak TFLOPS,W --copy-peak TBPS,W --idle-watts W [--busy-watts W] [--cap-watts W]]

The suite's roofline (variantbench/catalog/moe.py `work`) counts the layer's FLOPs and bytes at once:
max(FLOPs / peak, bytes / bandwidth). A grouped GEMM that runs its experts one after another cannot beat
the sum, over experts, of each expert's own bound: a hot expert (thousands of rows) at the matmul peak,
a cold one (a few rows) at the copy peak reading its weights. This prints both and their ratio, and the
hottest experts' rows. The routing inputs come from the suite's make_problem at seed 0 on the CPU: the
same zipf structure (exponent, load direction), but the CPU's random numbers, not the GPU's, so the
counts are a stand-in for the timed load's (hottest 3919 rows here, 3904 in the GPU sweep); the
experts' weights are not made, so it runs in seconds. Peaks default to session 21's H200 figures.

Given what the peaks draw (tools/probe_peak_power.py: each peak's rate and power back to back, the idle GPU's
power, and that of every SM kept busy doing next to nothing), it also prints the power cap's floor. The
model: a busy GPU draws idle + busy + a x FLOP/s + b x byte/s, a and b read off the peaks (the matmul's power
above idle + busy over its rate, the copy's alike), so the layer's FLOPs and bytes take at least
(FLOPs x a + bytes x b) / (P_cap - P_idle - P_busy). With busy 0 every watt above idle follows the work and
the floor is highest; the more of it is the fixed cost of being busy, the lower the floor, down to the
roofline's max() where the peaks' own work costs nothing. Where each peak alone draws the cap and busy is 0,
the floor is the FLOPs' time plus the bytes': the roofline's max() needs the two at once, which the cap does
not feed. It holds at the peaks' clocks; a lower clock's lower voltage would spend less energy an operation.
"""

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference.moe import route  # noqa: E402
from variantbench.catalog import Unsupported, family  # noqa: E402
from variantbench.shapes import MoEShape, moe_model  # noqa: E402


@dataclass(frozen=True)
class RoutingOnly(MoEShape):
    """The shape with 16-wide experts and no shared one: make_problem draws the tokens, the router and its
    bias before any expert weight, so they are what the full shape would draw on this device, at a
    sliver of the memory."""

    @property
    def config(self):
        return replace(moe_model(self.model), ffn_dim=16, n_shared=0)


def power_floor(flops, nbytes, matmul, copy, idle_w, busy_w, cap_w):
    """The least time (s) of these FLOPs and bytes under a cap of cap_w (the module docstring's model): matmul
    (FLOP/s, W) and copy (bytes/s, W) the peaks' rates and powers, idle_w the idle GPU's, busy_w the fixed
    cost above it of a GPU at work."""
    fixed = idle_w + busy_w
    joules = flops * (matmul[1] - fixed) / matmul[0] + nbytes * (copy[1] - fixed) / copy[0]
    return joules / (cap_w - fixed)


def peak(text):
    """RATE,WATTS (argparse's type): a peak's rate in 1e12 a second (TFLOP/s or TB/s) and its power."""
    try:
        rate, watts = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not RATE,WATTS (two numbers)") from None
    if rate <= 0 or watts <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a peak's rate and power are positive")
    return rate * 1e12, watts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", nargs="?", default="deepseek-v3-prefill-t4k-zipf")
    parser.add_argument("--variant", default="softmax_topk")
    parser.add_argument("--tflops", type=float, default=753.0, help="bfloat16 matmul peak, TFLOP/s")
    parser.add_argument("--gbps", type=float, default=4240.0, help="copy peak, GB/s")
    parser.add_argument("--matmul-peak", type=peak, default=None, help="the peak matmul's TFLOP/s,W back to back")
    parser.add_argument("--copy-peak", type=peak, default=None, help="the peak copy's TB/s,W back to back")
    parser.add_argument("--idle-watts", type=float, default=None, help="the idle GPU's power, W")
    parser.add_argument("--busy-watts", type=float, default=0.0,
                        help="the fixed cost of a GPU at work above idle, W (probe_peak_power's spin; default 0)")
    parser.add_argument("--cap-watts", type=float, default=700.0, help="the GPU's power cap, W")
    args = parser.parse_args()
    powers = [x for x in (args.matmul_peak, args.copy_peak, args.idle_watts) if x is not None]
    if powers:
        fixed = (args.idle_watts or 0) + args.busy_watts
        if len(powers) < 3 or args.idle_watts < 0 or args.busy_watts < 0 or \
                not fixed < min(args.cap_watts, args.matmul_peak[1], args.copy_peak[1]):
            parser.error("give --matmul-peak, --copy-peak and --idle-watts; idle + busy under the peaks' power "
                         "and the cap, neither negative")
    moe = family("moe")
    try:
        shape, variant = moe.shape(args.shape), moe.variant(args.variant)
    except Unsupported as unknown:
        print(f"moe_expert_bound: {unknown}", file=sys.stderr)
        raise SystemExit(2)
    config = shape.config
    routing = RoutingOnly(shape.name, shape.model, shape.tokens, shape.skew, "cpu", shape.tier)
    problem = moe.make_problem(variant, routing, device=torch.device("cpu"), dtype=torch.bfloat16, seed=0)
    experts, _ = route(variant.router, config, problem.x, problem.router_weight, problem.selection_bias)
    rows = torch.bincount(experts.flatten(), minlength=config.n_experts).double()
    flop_s, byte_s, elem = args.tflops * 1e12, args.gbps * 1e9, 2
    dim, ffn, tokens = config.dim, config.ffn_dim, shape.tokens
    shared_ffn = config.n_shared * ffn
    # as `work` counts them: routed, shared expert, router; weights of reached experts, tokens in and out
    flops = 6 * dim * ffn * rows.sum() + 6 * dim * shared_ffn * tokens + 2 * tokens * dim * config.n_experts
    nbytes = elem * (3 * dim * ffn * (rows > 0).sum() + 3 * dim * shared_ffn + config.n_experts * dim
                     + 2 * tokens * dim)
    roofline = max(flops / flop_s, nbytes / byte_s)
    each = torch.maximum(6 * dim * ffn * rows / flop_s, (rows > 0) * 3 * dim * ffn * elem / byte_s)
    rest = (max(6 * dim * shared_ffn * tokens / flop_s, 3 * dim * shared_ffn * elem / byte_s)
            + max(2 * tokens * dim * config.n_experts / flop_s, config.n_experts * dim * elem / byte_s)
            + 2 * tokens * dim * elem / byte_s)
    compute_bound = int((6 * dim * ffn * rows / flop_s > 3 * dim * ffn * elem / byte_s).sum())
    print(f"{shape.name} routed by {variant.name}: {int(rows.sum())} rows over {int((rows > 0).sum())} of "
          f"{config.n_experts} experts; hottest {rows.sort(descending=True).values[:8].int().tolist()}")
    print(f"suite's roofline (all at once):      {roofline * 1e3:7.3f} ms; "
          f"65% of roofline is {roofline / 0.65 * 1e3:.3f} ms a call")
    print(f"experts one by one, each at its bound: {each.sum().item() * 1e3:7.3f} ms routed ({compute_bound} experts "
          f"compute-bound) + {rest * 1e3:.3f} ms shared expert, router, tokens")
    print(f"so a schedule of experts one after another reads at most "
          f"{roofline / (each.sum().item() + rest):.1%} of the suite's roofline")
    if powers:
        floor = max(roofline, power_floor(flops, nbytes, args.matmul_peak, args.copy_peak, args.idle_watts,
                                          args.busy_watts, args.cap_watts))
        print(f"under a {args.cap_watts:.0f} W cap (idle {args.idle_watts:.0f} W, busy {args.busy_watts:.0f} W "
              f"more): at least {floor.item() * 1e3:.3f} ms a call, so at most {roofline / floor:.1%} of the "
              f"suite's roofline")


if __name__ == "__main__":
    main()
