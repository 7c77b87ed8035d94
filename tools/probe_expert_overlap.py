"""Can the hot experts' products overlap the cold experts' weight reads? A GPU probe for issue 17's
DeepSeek-V3 prefill goal (65% of the suite's roofline; 44.6% in session 21):

    python3 tools/probe_expert_overlap.py [SHAPE] [--variant ROUTER] [--hot-rows N]
        [--hot-gate-up M,N,K,WARPS,STAGES] [--hot-down ...] [--cold-gate-up ...] [--cold-down ...]

Why: tools/moe_expert_bound.py shows that a grouped GEMM running its experts one after another reads at
most 58.2% of the roofline at deepseek-v3-prefill-t4k-zipf, since a hot expert (thousands of rows) is
bound by the tensor cores and a cold one (a few rows) by reading its weights, and the two never run at
once. Here the routed rows are split by load: experts with at least --hot-rows rows (default: the module's HOT_ROWS,
178, where an expert's products take as long as its weight reads at session 21's H200 peaks) and the
rest, each part with its own rows, offsets and weights (copied out, not timed). Our expert GEMMs
(kernels/moe/triton_experts.py, gate_up then down) then run on each part, checked first against the
whole call's rows, and are timed by do_bench (median): the whole; each part alone; the hot part through
torch._grouped_mm too (a peer's grouped GEMM on the tensor cores' share); both parts one after another on
one stream; and both at once on two streams, either part launched first (a launch's
programs take the SMs in launch order, so which goes first may decide whether they share the GPU).
Each part's line also gives its own bound (products at the matmul peak, weights at the copy peak).
If the two streams beat one stream by much, a split layer pays; if not, the kernels need SMs of their
own (a persistent launch per part), which this probe cannot show.

Each part may take its own tilings (triton_experts.Tiles; default the module's: gate_up as SHARES gives
the hot experts and the rest at prefill, down as down_tiles picks for the part). With 64-row tiles, a
gate_up program holds 164 KB of shared memory and a wide down one 147 KB (tools/compile_experts_sm90.py),
so one of either fills an SM's 228 KB and a second launch's programs wait for SMs of their own: session 28
measured no overlap on two streams. A cold part of 16-row tiles holds 35 KB (gate_up at 2 stages; 70 KB at
3) or 37-55 KB (down at 3-4 stages), so one cold program fits on an SM beside one hot program (a 164 KB
gate_up beside the 35 KB one; a 123-148 KB one at 3 stages beside the 70 KB one), whose own size keeps a
second hot one out: the two parts could then share every SM, the hot on the tensor cores, the cold
reading weights. Session 35 (H200) measured the sum of the parts on two streams at every pairing.

After its do_bench figure each call runs back to back for about a second under NVML
(variantbench.power.Sampler.back_to_back): its mean SM clock, the energy a call from the GPU's energy counter
and the power that makes. An H200 holds 700 W: where each part alone draws about the cap (session 35: 663-750 W
by the counter), running both at once leaves each less power, and together they take about the sum of their
times whatever the schedule (tools/moe_expert_bound.py's power floor, and how much less a fixed share of the
power would allow).
"""

import argparse
import sys
from pathlib import Path

import torch
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.moe import grouped_mm, triton_experts  # noqa: E402
from variantbench.power import Sampler  # noqa: E402
from routed_load import routed_load  # noqa: E402  (beside this file)

PEAK_FLOPS, PEAK_BYTES = 753e12, 4240e9  # session 21's H200 bfloat16 matmul and copy peaks (moe_expert_bound)


def refuse(message):
    """Bad input or a missing GPU: one line on stderr, exit 2 (the project's code for it)."""
    print(f"probe_expert_overlap: {message}", file=sys.stderr)
    raise SystemExit(2)


def split(rows, offsets, w13, w2, hot):
    """(rows, offsets, w13, w2, where) of the experts hot selects ((E,) bool), in expert order: their rows
    (expert order kept), the ends of their rows, their weights, and the positions of their rows among all
    the routed rows (to check a part's output against the whole call's)."""
    ends = offsets.long()
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    chosen = hot.nonzero().flatten()
    where = torch.cat([torch.arange(starts[e], ends[e], device=rows.device) for e in chosen.tolist()]
                      + [torch.zeros(0, dtype=torch.long, device=rows.device)])
    counts = (ends - starts)[chosen]
    return (rows[where].contiguous(), counts.cumsum(0).to(torch.int32), w13[chosen].contiguous(),
            w2[chosen].contiguous(), where)


def bound_ms(counts, dim, ffn):
    """The part's own bound, expert by expert: products at the matmul peak or weights at the copy peak."""
    each = torch.maximum(6 * dim * ffn * counts / PEAK_FLOPS, (counts > 0) * 3 * dim * ffn * 2 / PEAK_BYTES)
    return each.sum().item() * 1e3


def tiles(text):
    """A tiling, M,N,K,WARPS,STAGES (argparse's type): tile sides powers of two from 16 (tl.dot's least), warps
    and stages positive."""
    try:
        tiling = triton_experts.Tiles(*(int(part) for part in text.split(",")))
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not M,N,K,WARPS,STAGES (five integers)") from None
    if any(side < 16 or side & (side - 1) for side in tiling[:3]) or min(tiling[3:]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: tile sides are powers of two from 16, warps and stages from 1")
    return tiling


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", nargs="?", default="deepseek-v3-prefill-t4k-zipf")
    parser.add_argument("--variant", default="softmax_topk", help="the MoE variant (its router) that routes the load")
    parser.add_argument("--hot-rows", type=int, default=None,
                        help="rows from which an expert is hot (default: the module's HOT_ROWS)")
    for part in ("hot", "cold"):
        for gemm in ("gate-up", "down"):
            parser.add_argument(f"--{part}-{gemm}", type=tiles, default=None,
                                help=f"the {part} part's {gemm} tiling, M,N,K,WARPS,STAGES (default: the module's)")
    args = parser.parse_args()
    shape, variant, problem, flat, rows, offsets = routed_load(args.shape, args.variant, refuse)
    config = problem.config
    counts = torch.bincount(flat, minlength=config.n_experts)
    hot_rows = args.hot_rows or triton_experts.HOT_ROWS
    hot = counts >= hot_rows
    if not hot.any() or hot.all():
        refuse(f"at {hot_rows} rows every expert or none is hot ({int(counts.max())} rows the hottest); "
               f"choose --hot-rows between")
    whole = triton_experts.experts(rows, problem.w13, problem.w2, offsets)
    parts = {"hot": split(rows, offsets, problem.w13, problem.w2, hot),
             "cold": split(rows, offsets, problem.w13, problem.w2, ~hot)}
    print(f"{shape.name} routed by {variant.name}: {rows.shape[0]} rows over {int((counts > 0).sum())} experts; "
          f"hot (>= {hot_rows} rows): {int(hot.sum())} experts, {int(counts[hot].sum())} rows")
    shares = triton_experts.SHARES  # the module's gate_up tilings: the hot experts', then the rest's
    chosen = {"hot": (args.hot_gate_up or shares[0].tiles, args.hot_down),
              "cold": (args.cold_gate_up or shares[-1].tiles, args.cold_down)}

    def run(name):
        part_rows, part_offsets, w13, w2, _ = parts[name]
        gate_up, down = chosen[name]
        hidden = triton_experts.gate_up(part_rows, w13, part_offsets, gate_up)
        return triton_experts.down(hidden, w2, part_offsets, tiles=down)

    def torch_hot():
        """The hot part through torch._grouped_mm (CUTLASS's grouped GEMM, the layer's path for experts of
        many rows): what a peer's GEMMs reach on the tensor cores' part of the load."""
        part_rows, part_offsets, w13, w2, _ = parts["hot"]
        return grouped_mm.swiglu_experts(part_rows, w13, w2, part_offsets)

    error = (torch_hot().float() - whole[parts["hot"][-1]].float()).abs().max().item()
    if error > 0.05 * whole.float().abs().max().item():
        refuse(f"the hot part through torch._grouped_mm is {error:.3g} from the whole call's rows: not timed")
    for name, (part_rows, part_offsets, w13, w2, where) in parts.items():
        got = run(name)
        error = (got.float() - whole[where].float()).abs().max().item()
        if error > 0.05 * whole.float().abs().max().item():
            refuse(f"the {name} part's output is {error:.3g} from the whole call's rows: not timed")
        ends = part_offsets.long()
        part_counts = ends - torch.cat([ends.new_zeros(1), ends[:-1]])
        gate_up, down = chosen[name]
        down = down or triton_experts.down_tiles(part_rows.shape[0], w2.shape[0])
        print(f"  {name:5s} part: bound {bound_ms(part_counts, config.dim, config.ffn_dim):.3f} ms, "
              f"max difference from the whole call {error:.2e}; tiles gate_up "
              f"{tuple(gate_up)}, down {tuple(down)}")

    side = torch.cuda.Stream()

    def two_streams(first, second):
        def call():
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                run(first)
            run(second)
            torch.cuda.current_stream().wait_stream(side)
        return call

    calls = {"whole (the module's launches)": lambda: triton_experts.experts(rows, problem.w13, problem.w2, offsets),
             "hot alone": lambda: run("hot"), "hot through torch": torch_hot, "cold alone": lambda: run("cold"),
             "hot then cold, one stream": lambda: (run("hot"), run("cold")),
             "two streams, hot first": two_streams("hot", "cold"),
             "two streams, cold first": two_streams("cold", "hot")}
    sampler = Sampler(torch.device("cuda", torch.cuda.current_device()))
    for label, call in calls.items():
        ms = do_bench(call, warmup=25, rep=200, return_mode='median')
        loop_ms, state, energy = sampler.back_to_back(call, max(10, round(1e3 / ms)), torch.cuda.synchronize)
        power = sampler.unavailable if state is None else (
            f"{state.sm_clock_mhz:.0f} MHz, " + ("no energy counter" if energy is None else
                                                f"{energy:.0f} mJ a call: {energy / loop_ms:.0f} W")
            + f" (sampled {state.power_w:.0f} W)" + (f" ({', '.join(state.throttle)})" if state.throttle else ""))
        print(f"  {label:28s} {ms:8.3f} ms; back to back {loop_ms:.3f} ms a call, {power}", flush=True)


if __name__ == "__main__":
    main()
