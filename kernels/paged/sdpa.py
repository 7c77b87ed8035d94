"""SDPA over a contiguous copy of the paged cache: the unpaged reference point. The copy (each
sequence's keys and values gathered into (B, Hkv, longest, D)) is made once in `prepare`, not timed;
the timed call is decode attention as it would run if the cache were not paged, shorter sequences
masked past their end."""

import torch

from kernels.attention.sdpa import fastest
from reference.paged import gather


def prepare(variant, problem):
    p = problem
    length = int(p.seq_lens.max())
    k = gather(p.k_pool, p.page_table, p.seq_lens, p.page_size, length).contiguous()
    v = gather(p.v_pool, p.page_table, p.seq_lens, p.page_size, length).contiguous()
    mask = None
    if bool((p.seq_lens < length).any()):
        mask = (torch.arange(length, device=p.device)[None, :] < p.seq_lens[:, None]).view(p.batch, 1, 1, length)
    return fastest(p.q, k, v, attn_mask=mask, enable_gqa=True)
