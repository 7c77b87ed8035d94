"""Our token-level top-k attention (DSA): each query reads only the keys its selection lists.

A program is one (sequence, query, KV head): its rows are the KV head's query heads (4 for Llama-3-8B,
padded to the 16 rows a dot takes), its keys the query's selected positions (ascending), gathered a
tile of BLOCK_N at a time by index, with the online softmax of flash attention. No two queries share a
selection, so no key tile is shared between programs: the kernel is a gather, bound by memory.
"""

import torch
import triton
import triton.language as tl

from kernels.mla.triton_decode import online_softmax_step

ROWS = 16


@triton.jit
def _token_sparse_kernel(
    Q, K, V, O, Indices, Counts,
    stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks, stride_ob, stride_oh, stride_os,
    n_kv_heads, group, q_len, width, scale_log2,
    HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    kv_head, query = pid % n_kv_heads, pid // n_kv_heads
    batch, t = query // q_len, query % q_len
    rows = tl.arange(0, ROWS)
    row_ok = rows < group
    q_head = kv_head * group + rows
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + batch * stride_qb + q_head[:, None] * stride_qh + t * stride_qs + d[None, :],
                mask=row_ok[:, None], other=0.0)
    count = tl.load(Counts + query)
    m_i = tl.zeros([ROWS], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([ROWS], dtype=tl.float32)
    acc = tl.zeros([ROWS, HEAD_DIM], dtype=tl.float32)
    base = batch * stride_kb + kv_head * stride_kh
    for first in range(0, count, BLOCK_N):
        j = first + tl.arange(0, BLOCK_N)
        key_ok = j < count
        key = tl.load(Indices + query.to(tl.int64) * width + j, mask=key_ok, other=0).to(tl.int64)
        offs = base + key[:, None] * stride_ks + d[None, :]
        k = tl.load(K + offs, mask=key_ok[:, None], other=0.0)
        v = tl.load(V + offs, mask=key_ok[:, None], other=0.0)
        s = tl.where(key_ok[None, :], tl.dot(q, tl.trans(k)) * scale_log2, float("-inf"))
        m_i, l_i, acc = online_softmax_step(s, v, m_i, l_i, acc)
    out = acc / l_i[:, None]
    tl.store(O + batch * stride_ob + q_head[:, None] * stride_oh + t * stride_os + d[None, :],
             out.to(O.dtype.element_ty), mask=row_ok[:, None])


def prepare(variant, problem):
    """Lists each query's selected keys once (ascending, `token_selection.selected_indices`), launches
    once, returns the launch-only call."""
    from variantbench.catalog.token_selection import selected_indices

    q, k, v = problem.q, problem.k, problem.v
    batch, n_q_heads, q_len, head_dim = q.shape
    n_kv_heads = k.shape[1]
    group = n_q_heads // n_kv_heads
    if group > ROWS or k.stride() != v.stride() or k.stride(-1) != 1:
        raise ValueError(f"{group} query heads per KV head (at most {ROWS}), k and v in one layout")
    indices, valid = selected_indices(problem.selection, variant.topk_tokens)
    counts = valid.sum(-1, dtype=torch.int32).contiguous()
    indices = indices.to(torch.int32).contiguous()
    kernel = _token_sparse_kernel[(batch * q_len * n_kv_heads,)]
    launch = {"num_warps": 4, "num_stages": 2} if q.is_cuda else {}
    block_n = 64  # the interpreter too: its cost is per tile, and 16-key tiles made a CPU case take minutes

    def call():
        out = torch.empty_like(q)
        kernel(q, k, v, out, indices, counts, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
               k.stride(2), out.stride(0), out.stride(1), out.stride(2), n_kv_heads, group, q_len, indices.shape[-1],
               head_dim ** -0.5 * 1.4426950408889634, HEAD_DIM=head_dim, ROWS=ROWS, BLOCK_N=block_n, **launch)
        return out

    call()
    return call
