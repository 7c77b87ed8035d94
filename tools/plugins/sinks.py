"""A sliding window with 4 attention-sink tokens, and a sigmoid top-k router: the README's plug-in.

    variantbench try --plugin tools/plugins/sinks.py sink_window --against gqa_8
"""

import torch

from variantbench.catalog.attention import AttentionVariant
from variantbench.catalog.moe import MoEVariant

SINKS, WINDOW = 4, 1024


def sink_window(b, h, q_pos, kv_pos):
    """Keys 0-3 are always visible, then the WINDOW keys up to the query itself (AND-ed with causal)."""
    return (kv_pos < SINKS) | (q_pos - kv_pos < WINDOW)


def sigmoid_topk(logits, config, selection_bias):
    """Sigmoid scores, the k best, their weights renormalised: reference/moe.py's ROUTERS signature."""
    weights, experts = torch.sort(torch.sigmoid(logits), dim=-1, descending=True, stable=True)
    weights, experts = weights[:, :config.top_k], experts[:, :config.top_k]
    return experts, weights / weights.sum(-1, keepdim=True)


VARIANTS = (
    AttentionVariant("sink_window", mask=sink_window, note="4 sink keys and a 1024-key causal window"),
    MoEVariant("sigmoid_topk", router=sigmoid_topk, note="sigmoid scores, top-k, renormalised"),
)
