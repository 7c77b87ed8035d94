"""Decode attention over a paged KV cache: the correctness oracle and the unfused floor.

The cache is a pool of pages of `page_size` tokens, k_pool and v_pool (1, Hkv, n_pages * page_size,
D); sequence b's i-th page is pool page page_table[b, i], and its first seq_lens[b] positions are
its keys. Gathered into per-sequence order, this is plain GQA decode (reference/attention.py) with
every key of the sequence visible.
"""

import torch

from reference.attention import attention


def physical_positions(page_table, seq_lens, page_size, length):
    """(B, length) pool positions of logical positions 0..length-1 (those past a sequence's end point
    at its first page: masked, never read as keys)."""
    logical = torch.arange(length, device=page_table.device)
    pages = page_table[:, (logical // page_size).clamp(max=page_table.shape[1] - 1)].long()
    inside = logical[None, :] < seq_lens[:, None]
    return torch.where(inside, pages * page_size + logical % page_size, page_table[:, :1].long() * page_size)


def gather(pool, page_table, seq_lens, page_size, length):
    """(B, Hkv, length, D): each sequence's keys (or values) in logical order."""
    positions = physical_positions(page_table, seq_lens, page_size, length)
    return pool[0][:, positions].transpose(0, 1)


def paged_decode(q, k_pool, v_pool, page_table, seq_lens, page_size):
    """q (B, Hq, 1, D) -> (B, Hq, 1, D): each sequence's new token over its keys."""
    length = int(seq_lens.max())
    k = gather(k_pool, page_table, seq_lens, page_size, length)
    v = gather(v_pool, page_table, seq_lens, page_size, length)
    lens = seq_lens.to(q.device)

    def within(b, h, q_idx, kv_idx):
        return kv_idx < lens[b]

    return attention(q, k, v, mask_mod=within)


def prepare(variant, problem):
    p = problem
    return lambda: paged_decode(p.q, p.k_pool, p.v_pool, p.page_table, p.seq_lens, p.page_size)
