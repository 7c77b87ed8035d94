"""The MoE layer on torch's grouped GEMM: one `torch._grouped_mm` for every expert's gate and up
projection, one for every down projection, over the routed rows grouped by expert.

Routing, permutation and combine are plain torch ops (argsort, gather, index_add); the experts' GEMMs
are two kernel launches whatever the number of experts, with no host synchronisation (group offsets
are found on the device, see `expert_offsets`). Where torch has no `_grouped_mm` the catalog marks this implementation
unsupported rather than silently timing a per-expert loop.
"""

import torch
import torch.nn.functional as F

from variantbench.catalog import lookup


def _softmax_topk(logits, config, selection_bias):
    weights, experts = torch.topk(torch.softmax(logits, dim=-1), config.top_k, dim=-1)
    return experts, weights / weights.sum(-1, keepdim=True)


def _sigmoid_grouped_topk(logits, config, selection_bias):
    scores = torch.sigmoid(logits)
    biased = scores + selection_bias
    tokens, n_experts = scores.shape
    grouped = biased.view(tokens, config.n_groups, n_experts // config.n_groups)
    group_rank = torch.topk(grouped, min(2, grouped.shape[-1]), dim=-1).values.sum(-1)
    best_groups = torch.topk(group_rank, config.topk_groups, dim=-1).indices
    eligible = torch.zeros_like(group_rank, dtype=torch.bool).scatter_(1, best_groups, True)
    biased = biased.masked_fill(~eligible.repeat_interleave(n_experts // config.n_groups, dim=1), float("-inf"))
    experts = torch.topk(biased, config.top_k, dim=-1).indices
    weights = scores.gather(1, experts)
    return experts, config.routed_scale * weights / weights.sum(-1, keepdim=True)


def expert_offsets(sorted_experts, n_experts):
    """(E,) int32 end of each expert's rows in expert order, from the routed experts sorted: the group
    offsets `torch._grouped_mm` takes. A binary search on the device; `torch.bincount` sizes its
    output by the largest value, read on the host. At cad5169 every MoE call synchronised with the
    host (Mixtral decode, 1.3-1.5 ms on an H200, so timed eagerly rather than as CUDA-graph replays);
    bincount was one synchronisation, whether the only one a GPU run will tell."""
    bounds = torch.arange(n_experts, device=sorted_experts.device, dtype=sorted_experts.dtype)
    return torch.searchsorted(sorted_experts, bounds, right=True).to(torch.int32)


def swiglu_experts(rows, w13, w2, offsets):
    """(R, dim) each routed row through its expert's SwiGLU on torch's grouped GEMM: rows (R, dim) in expert
    order, w13 (E, 2 ffn, dim) gate then up, w2 (E, dim, ffn), offsets `expert_offsets`'."""
    gate, up = torch._grouped_mm(rows, w13.transpose(-2, -1), offs=offsets).chunk(2, dim=-1)
    return torch._grouped_mm(F.silu(gate) * up, w2.transpose(-2, -1), offs=offsets)


# reference/moe.py's routers by the same names: (logits (T, E) float32, config, selection_bias) ->
# (experts, weights). tests/test_moe.py checks that every catalog router has an entry here.
ROUTERS = {"softmax_topk": _softmax_topk, "sigmoid_grouped_topk": _sigmoid_grouped_topk}


def _route(router, config, x, router_weight, selection_bias):
    logits = x.float() @ router_weight.float().t()
    # A plug-in's router is its own function (variantbench.catalog.moe.MoEVariant), run as it is.
    route = router if callable(router) else lookup(ROUTERS, router, "grouped_mm MoE router")
    return route(logits, config, selection_bias)


def prepare_function(variant, problem):
    """The layer, with the problem's experts and router, as a function of any tokens x (T, dim)."""
    config = problem.config
    w13, w2 = problem.w13, problem.w2

    def layer(x):
        experts, weights = _route(variant.router, config, x, problem.router_weight, problem.selection_bias)
        flat = experts.flatten()
        order = torch.argsort(flat)
        token = order // config.top_k
        offsets = expert_offsets(flat[order], config.n_experts)
        rows = swiglu_experts(x[token], w13, w2, offsets)
        y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        y.index_add_(0, token, rows.float() * weights.flatten()[order, None])
        if problem.shared13 is not None:
            gate, up = (x @ problem.shared13.t()).chunk(2, dim=-1)
            y += ((F.silu(gate) * up) @ problem.shared2.t()).float()
        return y.to(x.dtype)

    layer.backend = "grouped_mm"
    return layer


def prepare(variant, problem):
    layer = prepare_function(variant, problem)

    def call():
        return layer(problem.x)

    call()
    return call
