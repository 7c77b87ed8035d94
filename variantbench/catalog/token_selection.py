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
INDEX_CHUNK = 1024  # queries a pass when packing or listing a selection: 256 MiB of int32 keys at 64k
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


def packed_bits(selection):
    """(B, Sq, ceil(Skv / 8)) uint8: key kv of query q is bit kv % 8 of byte kv // 8 of row q, packed a
    chunk of queries at a time."""
    batch, q_len, kv_len = selection.shape
    n_bytes = -(-kv_len // 8)
    bits = torch.zeros(batch, q_len, n_bytes, dtype=torch.uint8, device=selection.device)
    weights = 2 ** torch.arange(8, dtype=torch.uint8, device=selection.device)
    for start in range(0, q_len, INDEX_CHUNK):
        rows = selection[:, start:start + INDEX_CHUNK]
        padded = torch.nn.functional.pad(rows, (0, 8 * n_bytes - kv_len)).view(batch, rows.shape[1], n_bytes, 8)
        bits[:, start:start + INDEX_CHUNK] = (padded.to(torch.uint8) * weights).sum(-1, dtype=torch.uint8)
    return bits


def token_mask(selection, offset):
    """The selection as a mask function over its bits packed 8 keys a byte: a (B, Sq, Skv) bool read by
    Flex at llama-3-8b-s64k spans 2^32 elements, past the 32-bit offsets of its kernels (ec6ebbf: max
    error 0.18 against the reference there, right at 16k); packed it spans 2^29."""
    bits = packed_bits(selection)

    def dsa_topk(b, h, q_idx, kv_idx):
        return (bits[b, q_idx, kv_idx // 8].to(torch.int32) >> (kv_idx % 8)) & 1 == 1

    return dsa_topk


def selected_token_pairs(topk, q_len, kv_len):
    """(query, key) pairs per head and sequence."""
    seen = torch.arange(kv_len - q_len, kv_len) + 1
    return int(seen.clamp(max=topk).sum())


def selected_indices(selection, topk):
    """(indices (B, Sq, k) int64, valid (B, Sq, k) bool): each query's keys in ascending order, padded
    with key 0 (marked invalid) where it has fewer than k. Sorted a chunk of queries at a time: the
    whole (B, Sq, Skv) int64 key table is 32 GiB at llama-3-8b-s64k (ec6ebbf ran out of an H200)."""
    batch, q_len, kv_len = selection.shape
    width = min(topk, kv_len)
    keys = torch.arange(kv_len, device=selection.device, dtype=torch.int32)
    indices = torch.empty(batch, q_len, width, dtype=torch.int64, device=selection.device)
    for start in range(0, q_len, INDEX_CHUNK):
        table = torch.where(selection[:, start:start + INDEX_CHUNK], keys, kv_len)
        indices[:, start:start + INDEX_CHUNK] = table.sort(-1).values[..., :width]
    valid = indices < kv_len
    return indices.masked_fill(~valid, 0), valid
