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


def _pair(ranked, position):
    """(T, 2) the indices of each row's last kept (at position - 1, sorted descending) and first left
    out; the second -1 where nothing is left out."""
    order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices
    if position >= ranked.shape[-1]:
        return torch.stack([order[:, position - 1], torch.full_like(order[:, 0], -1)], dim=-1)
    return order[:, position - 1:position + 1]


def _margin(ranked, pair):
    """(T,) ranked[pair[:, 0]] - ranked[pair[:, 1]]; infinite where nothing was left out (or where the
    first left out was never a candidate, -inf)."""
    kept = ranked.gather(1, pair[:, :1])[:, 0]
    out = ranked.gather(1, pair[:, 1:].clamp(min=0))[:, 0]
    return torch.where(pair[:, 1] < 0, torch.inf, kept - out)


def _group_ranks(biased, config):
    tokens, n_experts = biased.shape
    per_group = n_experts // config.n_groups
    return top_k(biased.view(tokens, config.n_groups, per_group), min(2, per_group))[0].sum(-1)


def _softmax_margins(ranked, config, deciding=None):
    deciding = _pair(ranked, config.top_k) if deciding is None else deciding
    return _margin(ranked, deciding)[:, None], deciding


def _grouped_margins(biased, config, deciding=None):
    """The groups' call (the topk_groups-th group rank over the next) and, among the eligible groups'
    experts, the experts' call (the top_k-th over the next; infinite where the eligible are exactly
    top_k). `deciding` keeps the eligible experts, so another dtype's margins weigh the same candidates."""
    group_rank = _group_ranks(biased, config)
    if deciding is None:
        per_group = biased.shape[1] // config.n_groups
        eligible = torch.zeros_like(group_rank, dtype=torch.bool)
        eligible.scatter_(1, top_k(group_rank, config.topk_groups)[1], True)
        eligible = eligible.repeat_interleave(per_group, dim=1)
        deciding = (_pair(group_rank, config.topk_groups), eligible,
                    _pair(biased.masked_fill(~eligible, float("-inf")), config.top_k))
    groups, eligible, experts = deciding
    candidates = biased.masked_fill(~eligible, float("-inf"))
    return torch.stack([_margin(group_rank, groups), _margin(candidates, experts)], dim=-1), deciding


@dataclass(frozen=True)
class Router:
    """A routing rule. `choose(logits (T, E) float32, the model's config, the selection bias (E,)
    float32) -> (experts, weights)`; `ranked(logits, config, selection_bias) -> (T, E)`: what its choice
    orders (softmax's order is the logits'; DeepSeek-V3's the biased sigmoid scores); `margins(ranked,
    config, deciding=None) -> ((T, n) margins, deciding)`: the calls that decided each token's choice,
    each as the difference of the two values it weighed (the last kept over the first left out), and
    `deciding`, which pairs those were; passed back, the same pairs' differences in another `ranked`
    (the working dtype's). A call closer than its error there may legitimately go either way (the block
    family's check leaves such rows out, reference/block.py routing_decided)."""

    choose: Callable
    ranked: Callable
    margins: Callable

    def __call__(self, logits, config, selection_bias):
        return self.choose(logits, config, selection_bias)


# A catalog entry's `router` names one of these. The catalog checks its names against this table.
ROUTERS = {
    "softmax_topk": Router(
        choose=lambda logits, config, selection_bias: softmax_topk(logits, config.top_k),
        ranked=lambda logits, config, selection_bias: logits,
        margins=_softmax_margins),
    "sigmoid_grouped_topk": Router(
        choose=lambda logits, config, selection_bias: sigmoid_grouped_topk(
            logits, config.top_k, selection_bias, config.n_groups, config.topk_groups, config.routed_scale),
        ranked=lambda logits, config, selection_bias: torch.sigmoid(logits) + selection_bias,
        margins=_grouped_margins),
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


def logits(x, router_weight):
    """(T, E) the router's logits in float32, as models compute them, whatever x's dtype."""
    return x.float() @ router_weight.float().t()


def route(name, config, x, router_weight, selection_bias):
    """(experts (T, k) int64, weights (T, k) float32) for tokens x (T, dim), by the router `name`."""
    return router(name)(logits(x, router_weight), config, selection_bias.float())


def ranked(name, config, x, router_weight, selection_bias):
    """(T, E) what the router `name` orders to choose (Router.ranked), or None for a plug-in's router
    (a function, whose choice the suite cannot see into)."""
    rule = router(name)
    if not isinstance(rule, Router):
        return None
    return rule.ranked(logits(x, router_weight), config, selection_bias.float())


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
