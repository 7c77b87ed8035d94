"""Our block-sparse top-k attention: each query block reads only the key blocks its selection names.

The selection (variantbench.catalog.block_selection) gives, per batch row, KV head and query block of
64 positions, the earlier 64-key blocks to read; the block itself is read last, under the causal mask.
A program is one query block of one query head: every selected block is whole and earlier, so it is
read without a mask (triton_flash's `_attend_block`, with its softcap and ALiBi switches), and only
the program's own block is masked. The selection is per KV head, as NSA's: the programs of one
group read the same blocks, which the L2 then serves to the rest of the group.
"""

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.attention.triton_flash import _attend_block

BLOCK = 64  # block_selection.SELECTION_BLOCK: a kernel tile is one selection block


@triton.jit
def _block_sparse_kernel(
    Q, desc_k, desc_v, O, Blocks, Counts,
    stride_qb, stride_qh, stride_qs,
    stride_ob, stride_oh, stride_os,
    n_kv_heads, n_q_heads, group, q_len, kv_len, n_blocks, max_selected,
    sm_scale, softcap,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
):
    offset = kv_len - q_len
    first_block = offset // BLOCK_N
    # Later query blocks read more blocks (min(topk, j)): launch them first so the grid's tail is short.
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    query_block = first_block + pid // group
    q_head_scalar = (tl.program_id(1) % n_kv_heads) * group + pid % group
    batch, kv_head = tl.program_id(1) // n_kv_heads, tl.program_id(1) % n_kv_heads

    positions = query_block * BLOCK_N + tl.arange(0, BLOCK_N)
    q_row = positions - offset
    valid = (q_row >= 0) & (q_row < q_len)
    q_row = tl.minimum(tl.maximum(q_row, 0), q_len - 1)  # rows outside the queries borrow a valid one
    q_pos = q_row + offset
    q_head = tl.zeros([BLOCK_N], dtype=tl.int32) + q_head_scalar
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + batch * stride_qb + q_head_scalar * stride_qh + q_row[:, None] * stride_qs + offs_d[None, :])

    lo = tl.zeros([BLOCK_N], dtype=tl.int32)
    hi = q_pos
    m_i = tl.zeros([BLOCK_N], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    selection = (batch * n_kv_heads + kv_head) * n_blocks + query_block
    for j in range(0, tl.load(Counts + selection)):
        key_block = tl.load(Blocks + selection * max_selected + j)
        acc, l_i, m_i = _attend_block(
            acc, l_i, m_i, q, desc_k, desc_v, batch, kv_head, key_block * BLOCK_N, lo, hi, q_pos, q_head,
            n_q_heads, sm_scale, softcap, None, False, SOFTCAP, ALIBI, False, BLOCK_N, HEAD_DIM)
    acc, l_i, m_i = _attend_block(
        acc, l_i, m_i, q, desc_k, desc_v, batch, kv_head, query_block * BLOCK_N, lo, hi, q_pos, q_head,
        n_q_heads, sm_scale, softcap, None, True, SOFTCAP, ALIBI, False, BLOCK_N, HEAD_DIM)
    out = acc / l_i[:, None]
    o_ptrs = O + batch * stride_ob + q_head_scalar * stride_oh + q_row[:, None] * stride_os + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=valid[:, None])


def prepare(variant, problem):
    """Selects the blocks (the variant's own function, on this problem's q and k), launches once, and
    returns the launch-only call. 4 warps, 2 stages on the GPU: not tuned yet."""
    q, k, v = problem.q, problem.k, problem.v
    batch, n_q_heads, q_len, head_dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    group = n_q_heads // n_kv_heads
    blocks, counts = variant.selected_blocks(problem)
    n_blocks = blocks.shape[2]
    tile = [1, 1, BLOCK, head_dim]
    desc_k, desc_v = TensorDescriptor.from_tensor(k, tile), TensorDescriptor.from_tensor(v, tile)
    n_query_blocks = n_blocks - (kv_len - q_len) // BLOCK
    launch = {} if not q.is_cuda else {"num_warps": 4, "num_stages": 2}
    kernel = _block_sparse_kernel[(n_query_blocks * group, batch * n_kv_heads)]

    def call():
        out = torch.empty_like(q)
        kernel(q, desc_k, desc_v, out, blocks, counts, q.stride(0), q.stride(1), q.stride(2),
               out.stride(0), out.stride(1), out.stride(2), n_kv_heads, n_q_heads, group, q_len, kv_len,
               n_blocks, blocks.shape[-1], head_dim ** -0.5, variant.softcap or 1.0,
               SOFTCAP=variant.softcap is not None, ALIBI=variant.alibi, HEAD_DIM=head_dim, BLOCK_N=BLOCK, **launch)
        return out

    call()
    return call
