"""The routed load our expert-GEMM tools time (tools/sweep_expert_gemm.py, tools/probe_expert_overlap.py):
one MoE shape's problem on the GPU at seed 0, its tokens routed by a variant's router and put in expert
order, as the triton layer orders them (kernels/moe/triton_moe.py)."""

import torch

from kernels.moe import grouped_mm
from variantbench.catalog import Unsupported, family


def routed_load(shape_name, variant_name, refuse):
    """(shape, variant, problem, flat, rows, offsets): the routed experts of every (token, slot), the rows
    in expert order and each expert's row end. refuse(message) (the tool's one line and exit 2) where a
    name is unknown, before anything needs the GPU, or where no GPU is visible."""
    moe = family("moe")
    try:
        shape, variant = moe.shape(shape_name), moe.variant(variant_name)
    except Unsupported as unknown:
        refuse(unknown)
    if not torch.cuda.is_available():
        refuse("needs a CUDA GPU; none is visible")
    problem = moe.make_problem(variant, shape, device=torch.device("cuda"), dtype=torch.bfloat16, seed=0)
    config = problem.config
    experts, _ = grouped_mm._route(variant.router, config, problem.x, problem.router_weight, problem.selection_bias)
    flat = experts.flatten()
    order = torch.argsort(flat, stable=True)
    rows = problem.x[order // config.top_k].contiguous()
    return shape, variant, problem, flat, rows, grouped_mm.expert_offsets(flat[order], config.n_experts)
