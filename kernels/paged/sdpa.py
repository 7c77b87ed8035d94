"""SDPA over a contiguous copy of the paged cache: the unpaged reference point. The copy (each
sequence's keys and values gathered into (B, Hkv, longest, D)) is made once in `prepare`, not timed;
the timed call is decode attention as it would run if the cache were not paged, shorter sequences
masked past their end."""

import torch

from kernels.attention.sdpa import fastest
from reference.paged import gather


def prepare(variant, problem):
    """The query heads of a KV head become its query rows (B, Hkv, group, D), as decode kernels fold
    them: with a mask for mixed lengths, SDPA's fused backends refuse enable_gqa, and its math backend
    would copy K and V for every query head inside the timed call."""
    p = problem
    length = int(p.seq_lens.max())
    k = gather(p.k_pool, p.page_table, p.seq_lens, p.page_size, length).contiguous()
    v = gather(p.v_pool, p.page_table, p.seq_lens, p.page_size, length).contiguous()
    mask = None
    if bool((p.seq_lens < length).any()):
        mask = (torch.arange(length, device=p.device)[None, :] < p.seq_lens[:, None]).view(p.batch, 1, 1, length)
    batch, n_q_heads, _, dim = p.q.shape
    rows = p.q.view(batch, k.shape[1], n_q_heads // k.shape[1], dim)  # (B, Hkv, group, D): q's own storage
    folded = fastest(rows, k, v, attn_mask=mask)

    def call():
        return folded().view(batch, n_q_heads, 1, dim)

    call.backend = folded.backend
    return call
