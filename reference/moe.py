"""A mixture-of-experts layer, eager and readable: route, permute, per-expert SwiGLU, combine.

The correctness oracle and the unfused floor for the moe family. Runs on CPU and GPU, in any dtype
(`compute_dtype`: the experts' math; routing is always float32, as models compute it). Imported by
no kernel.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def top_k(scores, k):
    """(values, indices) of the k largest scores of each row. Ties go to the lower index: a stable
    descending sort keeps equal scores in index order (torch.topk leaves their order unspecified)."""
    values, indices = torch.sort(scores, dim=-1, descending=True, stable=True)
    return values[..., :k], indices[..., :k]


def softmax_topk(logits, k):
    """Mixtral: softmax over all experts, keep the k best, renormalise their weights to sum to 1."""
    weights, experts = top_k(torch.softmax(logits, dim=-1), k)
    return experts, weights / weights.sum(-1, keepdim=True)


def sigmoid_grouped_topk(logits, k, selection_bias, n_groups, topk_groups, scale):
    """DeepSeek-V3: sigmoid scores. Selection ranks score + bias (the bias balances load; it never
    weights an output). Experts form n_groups equal groups; a group ranks by the sum of its two best
    biased scores, and only the topk_groups best groups are eligible. The k chosen experts' unbiased
    scores, normalised to sum to 1 and times `scale`, are their weights."""
    scores = torch.sigmoid(logits)
    biased = scores + selection_bias
    tokens, n_experts = scores.shape
    per_group = n_experts // n_groups
    group_rank = top_k(biased.view(tokens, n_groups, per_group), min(2, per_group))[0].sum(-1)
    best_groups = top_k(group_rank, topk_groups)[1]
    eligible = torch.zeros(tokens, n_groups, dtype=torch.bool, device=logits.device)
    eligible.scatter_(1, best_groups, True)
    eligible = eligible.repeat_interleave(per_group, dim=1)
    experts = top_k(biased.masked_fill(~eligible, float("-inf")), k)[1]
    weights = scores.gather(1, experts)
    return experts, scale * weights / weights.sum(-1, keepdim=True)


def _gap(ranked, position):
    """(T,) ranked[:, position - 1] - ranked[:, position] of each row sorted descending: how far the last
    kept is above the first left out; infinite where nothing is left out."""
    if position >= ranked.shape[-1]:
        return torch.full(ranked.shape[:1], float("inf"), dtype=ranked.dtype, device=ranked.device)
    ordered = torch.sort(ranked, dim=-1, descending=True).values
    return ordered[:, position - 1] - ordered[:, position]


def _grouped_gaps(biased, config):
    """The groups' ranks' gap at topk_groups, halved (a rank sums two scores, so its error is up to twice
    theirs), and the eligible experts' gap at top_k; the closer of the two."""
    tokens, n_experts = biased.shape
    per_group = n_experts // config.n_groups
    group_rank = top_k(biased.view(tokens, config.n_groups, per_group), min(2, per_group))[0].sum(-1)
    eligible = torch.zeros(tokens, config.n_groups, dtype=torch.bool, device=biased.device)
    eligible.scatter_(1, top_k(group_rank, config.topk_groups)[1], True)
    candidates = biased.masked_fill(~eligible.repeat_interleave(per_group, dim=1), float("-inf"))
    # where the eligible experts are exactly top_k, the first left out is -inf: an infinite gap
    return torch.minimum(_gap(group_rank, config.topk_groups) / 2, _gap(candidates, config.top_k))


@dataclass(frozen=True)
class Router:
    """A routing rule. `choose(logits (T, E) float32, the model's config, the selection bias (E,)
    float32) -> (experts, weights)`; `ranked(logits, config, selection_bias) -> (T, E)`: what its choice
    orders (softmax's order is the logits'; DeepSeek-V3's the biased sigmoid scores); `gaps(ranked,
    config) -> (T,)`: each token's closest call, the least difference between two ranked values whose
    order decided the choice. A choice closer to a tie than the working dtype's error in `ranked` may
    legitimately go either way (the block family's check leaves such rows out)."""

    choose: Callable
    ranked: Callable
    gaps: Callable

    def __call__(self, logits, config, selection_bias):
        return self.choose(logits, config, selection_bias)


# A catalog entry's `router` names one of these. The catalog checks its names against this table.
ROUTERS = {
    "softmax_topk": Router(
        choose=lambda logits, config, selection_bias: softmax_topk(logits, config.top_k),
        ranked=lambda logits, config, selection_bias: logits,
        gaps=lambda ranked, config: _gap(ranked, config.top_k)),
    "sigmoid_grouped_topk": Router(
        choose=lambda logits, config, selection_bias: sigmoid_grouped_topk(
            logits, config.top_k, selection_bias, config.n_groups, config.topk_groups, config.routed_scale),
        ranked=lambda logits, config, selection_bias: torch.sigmoid(logits) + selection_bias,
        gaps=_grouped_gaps),
}


def router(name):
    """The router of that name; an unknown name raises with the known ones. A plug-in's router is a
    function of the same signature, given itself."""
    if callable(name):
        return name
    try:
        return ROUTERS[name]
    except KeyError:
        raise ValueError(f"unknown MoE router {name!r}; known: {', '.join(ROUTERS)}") from None


def route(name, config, x, router_weight, selection_bias):
    """(experts (T, k) int64, weights (T, k) float32) for tokens x (T, dim), by the router `name`."""
    logits = x.float() @ router_weight.float().t()
    return router(name)(logits, config, selection_bias.float())


def ranked(name, config, x, router_weight, selection_bias):
    """(T, E) what the router `name` orders to choose (Router.ranked), or None for a plug-in's router
    (a function, whose choice the suite cannot see into)."""
    rule = router(name)
    if not isinstance(rule, Router):
        return None
    return rule.ranked(x.float() @ router_weight.float().t(), config, selection_bias.float())


def swiglu(x, w13, w2):
    """One expert, weights in nn.Linear's (out, in) layout: w13 (2 ffn, dim) holds gate then up;
    w2 (dim, ffn)."""
    gate, up = (x @ w13.t()).chunk(2, dim=-1)
    return (F.silu(gate) * up) @ w2.t()


def moe(router, config, x, router_weight, selection_bias, w13, w2, shared13=None, shared2=None, compute_dtype=None):
    """y (T, dim) in x's dtype (or compute_dtype): route, group the routed rows by expert (a stable
    sort, so rows keep token order within an expert), run each expert on its rows, add the rows back
    to their tokens weighted by the router, plus the shared expert on every token."""
    dtype = compute_dtype or x.dtype
    experts, weights = route(router, config, x, router_weight, selection_bias)
    flat = experts.flatten()
    order = torch.sort(flat, stable=True).indices
    token = order // config.top_k
    rows = x[token].to(dtype)
    counts = torch.bincount(flat, minlength=config.n_experts).tolist()
    y = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                    device=x.device)
    # split and unbind, not an index an expert: each indexed view's backward fills a zero tensor of the
    # whole operand (DeepSeek-V3's w13 is 15 GB in bfloat16, 256 of them a backward); these stack once
    start = 0
    for expert_rows, expert_w13, expert_w2 in zip(rows.split(counts), w13.unbind(0), w2.unbind(0)):
        count = expert_rows.shape[0]
        if count:
            out = swiglu(expert_rows, expert_w13.to(dtype), expert_w2.to(dtype))
            y.index_add_(0, token[start:start + count], out.to(y.dtype) * weights.flatten()[order[start:start + count], None].to(y.dtype))
            start += count
    if shared13 is not None:
        y += swiglu(x.to(dtype), shared13.to(dtype), shared2.to(dtype)).to(y.dtype)
    return y.to(dtype)


def prepare(variant, problem):
    """The reference as an implementation (the unfused floor the fused ones are timed against)."""
    config = problem.config

    def call():
        return moe(variant.router, config, problem.x, problem.router_weight, problem.selection_bias, problem.w13,
                   problem.w2, problem.shared13, problem.shared2)

    return call
