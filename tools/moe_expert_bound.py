"""How fast could an MoE layer's routed experts run, expert by expert? A CPU bound for issue 17's "65% of
roofline" at a skewed load, from the suite's own routed load and peaks:

    python3 tools/moe_expert_bound.py [SHAPE] [--variant ROUTER] [--tflops T] [--gbps G]
        [--matmul-watts W --copy-watts W --idle-watts W [--cap-watts W]]

The suite's roofline (variantbench/catalog/moe.py `work`) counts the layer's FLOPs and bytes at once:
max(FLOPs / peak, bytes / bandwidth). A grouped GEMM that runs its experts one after another cannot beat
the sum, over experts, of each expert's own bound: a hot expert (thousands of rows) at the matmul peak,
a cold one (a few rows) at the copy peak reading its weights. This prints both and their ratio, and the
hottest experts' rows. The routing inputs come from the suite's make_problem at seed 0 on the CPU: the
same zipf structure (exponent, load direction), but the CPU's random numbers, not the GPU's, so the
counts are a stand-in for the timed load's (hottest 3919 rows here, 3904 in the GPU sweep); the
experts' weights are not made, so it runs in seconds. Peaks default to session 21's H200 figures.

Given what the peaks draw (tools/probe_peak_power.py), it also prints the power cap's floor: each FLOP at the
matmul peak's energy above idle and each byte at the copy peak's, within the cap's headroom above idle,
(t_flops (P_matmul - P_idle) + t_bytes (P_copy - P_idle)) / (P_cap - P_idle). Where each peak alone draws the
cap, that is t_flops + t_bytes: the roofline's max() needs the two at once, which the cap does not feed. It
holds at the peaks' clocks; a lower clock's lower voltage spends less energy an operation.
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


def power_floor(flops_s, bytes_s, matmul_w, copy_w, idle_w, cap_w):
    """The least time (s) of flops_s seconds of FLOPs at the matmul peak and bytes_s of bytes at the copy
    peak under a cap of cap_w: each at its peak's energy above idle, within the cap's headroom above idle."""
    return (flops_s * (matmul_w - idle_w) + bytes_s * (copy_w - idle_w)) / (cap_w - idle_w)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", nargs="?", default="deepseek-v3-prefill-t4k-zipf")
    parser.add_argument("--variant", default="softmax_topk")
    parser.add_argument("--tflops", type=float, default=753.0, help="bfloat16 matmul peak, TFLOP/s")
    parser.add_argument("--gbps", type=float, default=4240.0, help="copy peak, GB/s")
    for name, what in (("matmul", "the matmul peak's power"), ("copy", "the copy peak's power"),
                       ("idle", "the idle GPU's power")):
        parser.add_argument(f"--{name}-watts", type=float, default=None, help=f"{what}, W (probe_peak_power.py)")
    parser.add_argument("--cap-watts", type=float, default=700.0, help="the GPU's power cap, W")
    args = parser.parse_args()
    watts = [w for w in (args.matmul_watts, args.copy_watts, args.idle_watts) if w is not None]
    if watts and (len(watts) < 3 or args.idle_watts >= min(args.cap_watts, args.matmul_watts, args.copy_watts)):
        parser.error("give --matmul-watts, --copy-watts and --idle-watts, idle under the others and the cap")
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
    if watts:
        floor = power_floor(flops / flop_s, nbytes / byte_s, args.matmul_watts, args.copy_watts, args.idle_watts,
                            args.cap_watts)
        print(f"under a {args.cap_watts:.0f} W cap (matmul peak {args.matmul_watts:.0f} W, copy peak "
              f"{args.copy_watts:.0f} W, idle {args.idle_watts:.0f} W): at least {floor.item() * 1e3:.3f} ms a call, "
              f"{roofline / floor:.1%} of the suite's roofline")


if __name__ == "__main__":
    main()
