"""Where the grouped_mm MoE layer's time goes, on the GPU: the whole layer against its two expert
GEMMs alone (the same routed, permuted rows and offsets), side by side, plus a profiler table of the
layer's kernels. The issue's goal: the expert GEMMs at Mixtral prefill reach 550 TFLOP/s.
    python tools/probe_moe_gemm.py [shape ...]   (default: both Mixtral prefill loads)
"""

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.moe import grouped_mm  # noqa: E402
from variantbench import timing  # noqa: E402
from variantbench.catalog import family  # noqa: E402
from variantbench.shapes import named  # noqa: E402


def probe(shape_name):
    moe = family("moe")
    shape = named(moe.shapes, shape_name, "shape")
    variant = moe.variants[0]
    problem = moe.make_problem(variant, shape, device=torch.device("cuda"), dtype=torch.bfloat16, seed=0)
    config, x = problem.config, problem.x
    experts, _ = grouped_mm._route(variant.router, config, x, problem.router_weight, problem.selection_bias)
    flat = experts.flatten()
    order = torch.argsort(flat)
    rows_in = x[order // config.top_k]
    counts = torch.bincount(flat, minlength=config.n_experts)
    offsets = torch.cumsum(counts, 0).to(torch.int32)
    w13_t, w2_t = problem.w13.transpose(-2, -1), problem.w2.transpose(-2, -1)
    hidden = torch._grouped_mm(rows_in, w13_t, offs=offsets)
    gate, up = hidden.chunk(2, dim=-1)
    act = F.silu(gate) * up

    calls = {
        "layer": grouped_mm.prepare(variant, problem),
        "gemm_up (w13)": lambda: torch._grouped_mm(rows_in, w13_t, offs=offsets),
        "gemm_down (w2)": lambda: torch._grouped_mm(act, w2_t, offs=offsets),
    }
    calls["both gemms"] = lambda: (calls["gemm_up (w13)"](), calls["gemm_down (w2)"]())
    pairs = flat.numel()
    flops = {
        "gemm_up (w13)": 2 * pairs * config.dim * 2 * config.ffn_dim,
        "gemm_down (w2)": 2 * pairs * config.ffn_dim * config.dim,
    }
    flops["both gemms"] = sum(flops.values())
    flops["layer"] = flops["both gemms"]
    # each call settled at its own clock, as the suite's ratios are timed (variantbench.timing)
    samples = timing.alternating_blocks(calls, torch.device("cuda")).samples
    print(f"\n{shape_name}: {pairs} routed pairs, tokens per expert {counts.tolist()}")
    print(f"{'call':16} {'ms':>8} {'IQR':>6} {'TFLOP/s (expert GEMM FLOPs)':>28}")
    for name, values in samples.items():
        ms = statistics.median(values)
        print(f"{name:16} {ms:8.3f} {timing.spread(values):6.1%} {flops[name] / ms / 1e9:28.1f}")

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            calls["layer"]()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=10, max_name_column_width=70))


if __name__ == "__main__":
    for name in sys.argv[1:] or ["mixtral-8x7b-prefill-t8k-uniform", "mixtral-8x7b-prefill-t8k-zipf"]:
        probe(name)
