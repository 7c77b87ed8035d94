"""Block-sparse top-k attention (NSA's selection branch, MoBA): which key blocks each query block reads.

Keys and queries fall into blocks of SELECTION_BLOCK positions. A query block reads its own block
(causal inside it) and the `topk` earlier key blocks whose mean-pooled keys score highest against its
mean-pooled queries. As in NSA, the score is summed over the query heads of a KV head, so one
selection serves the whole group: a kernel loads each selected K/V block once for all of them.
Ties go to the earlier block (a stable sort), so every implementation and the reference agree.

The selection is data-dependent but its size is not: query block j reads min(topk, j) earlier
blocks, so the work model counts pairs without the data (`selected_pairs`).
"""

import torch

SELECTION_BLOCK = 64  # NSA's selection block; our kernel's key tile is the same size


def n_blocks(kv_len):
    return -(-kv_len // SELECTION_BLOCK)


def block_selection(q, k, topk):
    """(B, Hkv, n, n) bool, n = blocks of the kv_len positions: [b, h, j, i] when query block j of KV
    head h reads earlier key block i (none for blocks that hold no query). q: (B, Hq, Sq, D), the last Sq positions; k: (B, Hkv, Skv, D).
    Scores in float32 from the inputs as they are."""
    batch, n_q_heads, q_len, dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    n = n_blocks(kv_len)
    pad = n * SELECTION_BLOCK - kv_len
    keys = torch.nn.functional.pad(k.float(), (0, 0, 0, pad)).view(batch, n_kv_heads, n, SELECTION_BLOCK, dim)
    key_counts = torch.full((n,), SELECTION_BLOCK, device=k.device, dtype=torch.float32)
    key_counts[-1] -= pad
    pooled_keys = keys.sum(3) / key_counts[:, None]
    query_block = (torch.arange(kv_len - q_len, kv_len, device=q.device) // SELECTION_BLOCK)
    pooled_queries = torch.zeros(batch, n_q_heads, n, dim, device=q.device, dtype=torch.float32)
    pooled_queries.index_add_(2, query_block, q.float())
    query_counts = torch.bincount(query_block, minlength=n)
    pooled_queries = (pooled_queries / query_counts.clamp(min=1).float()[:, None]).view(batch, n_kv_heads, -1, n, dim).sum(2)
    scores = pooled_queries @ pooled_keys.transpose(-1, -2)  # (B, Hkv, n query blocks, n key blocks)
    earlier = torch.ones(n, n, dtype=torch.bool, device=q.device).tril(-1)
    order = torch.sort(scores.masked_fill(~earlier, float("-inf")), dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=q.device).expand_as(order))
    return earlier & (rank < topk) & (query_counts > 0)[:, None]  # blocks before the queries read nothing


def selection_mask(selection, offset, group):
    """The mask function of a selection: own block (the causal mask is AND-ed by the variant) or a
    selected earlier one. Indexes the selection with b, h, so it depends on the batch row and head."""

    def block_topk(b, h, q_idx, kv_idx):
        query_block = (q_idx + offset) // SELECTION_BLOCK
        key_block = kv_idx // SELECTION_BLOCK
        return (query_block == key_block) | selection[b, h // group, query_block, key_block]

    return block_topk


def selected_blocks(selection):
    """(indices, counts): per (batch, KV head, query block) the selected key blocks in ascending order,
    padded with n, int32 (B, Hkv, n, max count), and how many there are, int32 (B, Hkv, n)."""
    n = selection.shape[-1]
    counts = selection.sum(-1, dtype=torch.int32)
    width = max(1, int(counts.max()))
    blocks = torch.where(selection, torch.arange(n, device=selection.device), n).sort(-1).values[..., :width]
    return blocks.to(torch.int32).contiguous(), counts.contiguous()


def selected_pairs(topk, q_len, kv_len):
    """(query, key) pairs per head and sequence: each query sees its own block up to itself, and
    min(topk, j) whole earlier blocks in block j."""
    positions = torch.arange(kv_len - q_len, kv_len)
    blocks = positions // SELECTION_BLOCK
    own = positions - blocks * SELECTION_BLOCK + 1
    return int((own + blocks.clamp(max=topk) * SELECTION_BLOCK).sum())
