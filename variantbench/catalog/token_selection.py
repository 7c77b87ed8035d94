"""Token-level top-k attention (DeepSeek-V3.2's sparse attention, DSA): each query attends to the k keys
a lightweight indexer scores highest, among the keys causal attention would show it.

The indexer is DeepSeek-V3.2's "lightning indexer": INDEX_HEADS small heads score key s for query t as
    I(t, s) = sum_j w(t, j) ReLU(q_I(t, j) . k_I(s)),
and the query keeps its top k (all of them while it has fewer than k). Its inputs come from the model's
hidden states through projections of their own; here they are drawn from the problem's seed, so the
selection is part of the problem, made once with it (as the block selection's pooled scores are from
q and k). The indexer's own cost is not in the timed call: the call is attention over the selection.
Ties go to the earlier key (a stable sort), so every implementation reads one selection.

The selection's size does not depend on the data: query i sees min(k, i + offset + 1) keys.
"""

import torch

INDEX_HEADS, INDEX_DIM = 64, 128  # DeepSeek-V3.2's indexer
QUERY_CHUNK = 256  # indexer scores are made for this many queries at a time
INDEXER_SEED_OFFSET = 7919


def token_selection(batch, q_len, kv_len, topk, *, device, seed):
    """(B, Sq, Skv) bool: the keys each query reads, from a seeded indexer."""
    gen = torch.Generator(device).manual_seed(seed + INDEXER_SEED_OFFSET)  # not the stream q and k come from
    index_q = torch.randn(batch, q_len, INDEX_HEADS, INDEX_DIM, generator=gen, device=device)
    index_k = torch.randn(batch, kv_len, INDEX_DIM, generator=gen, device=device)
    weights = torch.randn(batch, q_len, INDEX_HEADS, generator=gen, device=device) / INDEX_HEADS ** 0.5
    selection = torch.zeros(batch, q_len, kv_len, dtype=torch.bool, device=device)
    keys = torch.arange(kv_len, device=device)
    for start in range(0, q_len, QUERY_CHUNK):
        rows = torch.arange(start, min(start + QUERY_CHUNK, q_len), device=device)
        scores = torch.zeros(batch, rows.numel(), kv_len, device=device)
        for head in range(INDEX_HEADS):  # a head at a time: (B, 256, Skv) float32, 67 MB at 64k keys
            scores += weights[:, rows, head, None] * (index_q[:, rows, head] @ index_k.transpose(1, 2)).relu_()
        causal = keys[None, :] <= (rows + kv_len - q_len)[:, None]
        order = torch.sort(scores.masked_fill(~causal, float("-inf")), dim=-1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(-1, order, keys.expand_as(order))
        selection[:, rows] = causal & (rank < topk)
    return selection


def token_mask(selection, offset):
    def dsa_topk(b, h, q_idx, kv_idx):
        return selection[b, q_idx, kv_idx]

    return dsa_topk


def selected_token_pairs(topk, q_len, kv_len):
    """(query, key) pairs per head and sequence."""
    seen = torch.arange(kv_len - q_len, kv_len) + 1
    return int(seen.clamp(max=topk).sum())


def selected_indices(selection, topk):
    """(indices (B, Sq, k) int64, valid (B, Sq, k) bool): each query's keys in ascending order, padded
    with key 0 (marked invalid) where it has fewer than k."""
    kv_len = selection.shape[-1]
    keys = torch.where(selection, torch.arange(kv_len, device=selection.device), kv_len)
    width = min(topk, kv_len)
    indices = keys.sort(-1).values[..., :width]
    valid = indices < kv_len
    return indices.masked_fill(~valid, 0), valid
