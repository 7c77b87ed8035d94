"""How fast could an MoE layer's routed experts run, expert by expert? A CPU bound for issue 17's "65% of
roofline" at a skewed load, from the suite's own routed load and peaks:

    python3 tools/moe_expert_bound.py [SHAPE] [--variant ROUTER] [--tflops T] [--gbps G]
        [--pj-flop E --pj-byte E --idle-watts W [--cap-watts W]]

The suite's roofline (variantbench/catalog/moe.py `work`) counts the layer's FLOPs and bytes at once:
max(FLOPs / peak, bytes / bandwidth). A grouped GEMM that runs its experts one after another cannot beat
the sum, over experts, of each expert's own bound: a hot expert (thousands of rows) at the matmul peak,
a cold one (a few rows) at the copy peak reading its weights. This prints both and their ratio, and the
hottest experts' rows. The routing inputs come from the suite's make_problem at seed 0 on the CPU: the
same zipf structure (exponent, load direction), but the CPU's random numbers, not the GPU's, so the
counts are a stand-in for the timed load's (hottest 3919 rows here, 3904 in the GPU sweep); the
experts' weights are not made, so it runs in seconds. Peaks default to session 21's H200 figures.

Given the energy the peaks spend (tools/probe_peak_power.py), it also prints the power cap's floor: each
FLOP at the peak matmul's energy above idle and each byte at the peak copy's, within the cap's headroom above
idle, (FLOPs x pJ a FLOP + bytes x pJ a byte) / (P_cap - P_idle). Where each peak alone draws the cap, that
is the FLOPs' time plus the bytes': the roofline's max() needs the two at once, which the cap does not feed.
It holds at the peaks' clocks; a lower clock's lower voltage would spend less energy an operation.
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


def power_floor(flops, nbytes, pj_flop, pj_byte, idle_w, cap_w):
    """The least time (s) of these FLOPs and bytes under a cap of cap_w: each at its energy above idle (pJ),
    within the cap's headroom above idle."""
    return (flops * pj_flop + nbytes * pj_byte) * 1e-12 / (cap_w - idle_w)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", nargs="?", default="deepseek-v3-prefill-t4k-zipf")
    parser.add_argument("--variant", default="softmax_topk")
    parser.add_argument("--tflops", type=float, default=753.0, help="bfloat16 matmul peak, TFLOP/s")
    parser.add_argument("--gbps", type=float, default=4240.0, help="copy peak, GB/s")
    parser.add_argument("--pj-flop", type=float, default=None, help="the peak matmul's pJ a FLOP above idle")
    parser.add_argument("--pj-byte", type=float, default=None, help="the peak copy's pJ a byte above idle")
    parser.add_argument("--idle-watts", type=float, default=None, help="the idle GPU's power, W")
    parser.add_argument("--cap-watts", type=float, default=700.0, help="the GPU's power cap, W")
    args = parser.parse_args()
    energy = [x for x in (args.pj_flop, args.pj_byte, args.idle_watts) if x is not None]
    if energy and (len(energy) < 3 or min(energy) < 0 or args.idle_watts >= args.cap_watts):
        parser.error("give --pj-flop, --pj-byte and --idle-watts (none negative), idle under the cap")
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
    if energy:
        floor = power_floor(flops, nbytes, args.pj_flop, args.pj_byte, args.idle_watts, args.cap_watts)
        print(f"under a {args.cap_watts:.0f} W cap ({args.pj_flop:g} pJ a FLOP and {args.pj_byte:g} a byte above "
              f"{args.idle_watts:.0f} W idle): at least {floor.item() * 1e3:.3f} ms a call, "
              f"{roofline / floor:.1%} of the suite's roofline")


if __name__ == "__main__":
    main()
