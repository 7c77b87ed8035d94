"""Our paged decode kernel: GQA decode reading keys and values through the page table, split over the
cache (flash-decoding), partial states merged by kernels/mla/triton_decode.py's `merge_splits`.

A program is one (sequence, KV head, split): its rows are the KV head's query heads (4 for Llama-3-8B,
padded to a 16-row tile, the smallest a dot takes), its keys the split's range of the sequence's
logical positions, each tile of them found page by page: pool position = table[pos // page] * page +
pos % page. Batch 1 over 128k has only 8 (sequence, KV head) pairs, so the split count fills the GPU
(PROGRAMS_PER_SM programs per SM); a split past a short sequence's end reads nothing.
"""

import math

import torch
import triton
import triton.language as tl

from kernels.mla.triton_decode import MIN_SPLIT_KEYS, merge_splits, online_softmax_step
from variantbench.device import multiprocessors

# Programs per SM the splits aim at: batch 1 over 128k keys with 8 KV heads splits into 33 ranges on an
# H200 (session 8: 0.193 ms against SDPA's 0.156). Its own figure: MLA's decode aims at one wave, paged's
# tiles are smaller.
PROGRAMS_PER_SM = 2

ROWS = 16  # the query heads of a KV head, padded to a dot's smallest M


@triton.jit
def _paged_partial_kernel(
    Q, KPool, VPool, Table, Lens, PartOut, PartMax, PartSum,
    stride_qb, stride_qh, stride_pool_h, stride_pool_s, stride_table,
    n_kv_heads, group, page_size, split_len, scale_log2,
    HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    sequence_head, split = tl.program_id(0), tl.program_id(1)
    n_splits = tl.num_programs(1)
    batch, kv_head = sequence_head // n_kv_heads, sequence_head % n_kv_heads
    rows = tl.arange(0, ROWS)
    row_ok = rows < group
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + batch * stride_qb + (kv_head * group + rows)[:, None] * stride_qh + d[None, :],
                mask=row_ok[:, None], other=0.0)
    length = tl.load(Lens + batch)
    start = split * split_len
    end = tl.minimum(start + split_len, length)
    m_i = tl.zeros([ROWS], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    acc = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)
    for first in range(start, end, BLOCK_N):
        logical = first + tl.arange(0, BLOCK_N)
        key_ok = logical < end
        page = tl.load(Table + batch * stride_table + logical // page_size, mask=key_ok, other=0)
        position = page * page_size + logical % page_size
        offs = kv_head * stride_pool_h + position[:, None] * stride_pool_s + d[None, :]
        k = tl.load(KPool + offs, mask=key_ok[:, None], other=0.0)
        v = tl.load(VPool + offs, mask=key_ok[:, None], other=0.0)
        s = tl.where(key_ok[None, :], tl.dot(q, tl.trans(k)) * scale_log2, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc)
    part = (sequence_head * n_splits + split) * ROWS + rows
    tl.store(PartOut + part[:, None] * HEAD_DIM + d[None, :], acc)
    tl.store(PartMax + part, m_i)
    tl.store(PartSum + part, l_i)


def plan_splits(batch, n_kv_heads, longest, device):
    sms = multiprocessors(device)
    return max(1, min(math.ceil(PROGRAMS_PER_SM * sms / (batch * n_kv_heads)), math.ceil(longest / MIN_SPLIT_KEYS)))


def paged_launcher(q, k_pool, v_pool, page_table, seq_lens, page_size, *, n_splits=None, block_n=None):
    """A launch of paged decode: `launcher()` returns (B, Hq, 1, D). q (B, Hq, 1, D); pools (1, Hkv,
    pages x page_size, D) with a contiguous head dim; page_table (B, max pages) int32; seq_lens (B,)."""
    batch, n_q_heads, _, head_dim = q.shape
    n_kv_heads = k_pool.shape[1]
    group = n_q_heads // n_kv_heads
    if group > ROWS:
        raise ValueError(f"{group} query heads per KV head: at most {ROWS}")
    if k_pool.stride() != v_pool.stride() or k_pool.stride(-1) != 1:
        raise ValueError("the key and value pools need one layout with a contiguous head dim")
    longest = int(seq_lens.max())
    n_splits = n_splits or plan_splits(batch, n_kv_heads, longest, q.device)
    # 64 keys a tile on the GPU; 16 in the interpreter, so tiles there cross several small pages
    block_n = block_n or (64 if q.is_cuda else 16)
    split_len = math.ceil(longest / n_splits / block_n) * block_n  # whole tiles: no split starts mid-tile
    n_splits = math.ceil(longest / split_len)
    programs = batch * n_kv_heads
    part_out = torch.empty(programs, n_splits, ROWS, head_dim, device=q.device, dtype=torch.float32)
    part_max = torch.empty(programs, n_splits, ROWS, device=q.device, dtype=torch.float32)
    part_sum = torch.empty_like(part_max)
    table, lens = page_table.to(torch.int32).contiguous(), seq_lens.to(torch.int32).contiguous()
    partial = _paged_partial_kernel[(programs, n_splits)]
    merge = merge_splits[(1, programs)]
    launch = {"num_warps": 4, "num_stages": 2} if q.is_cuda else {}

    def launcher():
        partial(q, k_pool, v_pool, table, lens, part_out, part_max, part_sum,
                q.stride(0), q.stride(1), k_pool.stride(1), k_pool.stride(2), table.stride(0),
                n_kv_heads, group, page_size, split_len, head_dim ** -0.5 * 1.4426950408889634,
                HEAD_DIM=head_dim, ROWS=ROWS, BLOCK_N=block_n, **launch)
        out = torch.empty(programs, ROWS, head_dim, device=q.device, dtype=q.dtype)
        merge(part_out, part_max, part_sum, out, ROWS, n_splits, RANK=head_dim, BLOCK_H=ROWS)
        return out[:, :group].reshape(batch, n_q_heads, 1, head_dim)

    launcher.n_splits = n_splits
    return launcher


def prepare(variant, problem):
    p = problem
    launcher = paged_launcher(p.q, p.k_pool, p.v_pool, p.page_table, p.seq_lens, p.page_size)
    launcher()
    launcher.backend = f"triton ({launcher.n_splits} splits)"
    return launcher
