"""Our attention forward in Gluon for Hopper (sm_90): pending, compiled offline only, never run.

Why: our Triton forward (triton_flash.py) runs 1.11x cuDNN's causal GQA forward on an H200 (session 22:
1.1613 against 1.0463 ms at llama-3-8b-s4k). Triton 3.6.0 cannot issue the next key tile's q.k before
this tile's softmax (it waits on a non-accumulator dot at once: session 21's fwd-pipe), and its SASS
holds 3-4 CTA-wide barriers an iteration, so the two warpgroups of a program move in lockstep and the
tensor cores idle through every softmax. Gluon exposes the pieces: asynchronous warpgroup MMAs with
explicit waits, TMA loads tracked by mbarriers, warp specialisation, the layouts.

The schedule, FlashAttention-3's: a program owns 128 query rows of one head. One producer warp loads
each consumer's 64 query rows, then K and V tile by tile into rings of STAGES slots (a slot refilled
once both consumers have released it, through mbarriers: no CTA barrier anywhere in the loop). Two
consumer warpgroups of four warps each own 64 rows and run apart, so one's softmax can overlap the
other's products; within each, FlashAttention-3's order issues S_j = Q K_j^T with P_{j-1} V_{j-1}
and waits for S_j alone before S_j's softmax.

What compiling for sm_90 showed (tools/compile_gluon_sm90.py, Triton 3.6.0), session 22:
- One partition of eight warps in that order: 187 registers, no spill, but ptxas issued the wait for
  P_{j-1} V_{j-1} right after the first shuffle of the row max, ahead of every exp2 of the softmax
  (a ready instruction without inputs, it filled the shuffle's latency), so within a warpgroup the
  softmax did not overlap the product; an opaque dependency of the output's rescale on the row sums
  (`_after`) did not move it.
- Rescaling the output at the top of the next iteration instead, with S_{j+1} in flight, made ptxas
  serialise every MMA (C7514: "non wgmma instructions reading accumulator registers ... between start
  and end of the pipeline stage").
So the overlap this kernel can count on is between its two consumers.

Left for speed once it is right (a review's notes): on causal's diagonal tile the first consumer
computes its 64 rows against all 128 keys, half of them masked for every row; and row blocks go in
ascending order, so causal's longest programs start last.

Scope of this first version: 16-bit q, k, v of shape (B, H, S, 128), self-attention (Sq == Skv), S a
multiple of 128, causal or full, grouped heads. It returns the output and lse (log2 units, as
triton_flash's) for our backward.
"""

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

LOG2E = 1.4426950408889634
BLOCK_M = 128  # query rows a program: two consumer warpgroups of 64
BLOCK_N = 128  # keys a tile
STAGES = 2  # K and V tiles in flight each
WARPS = 4  # the default partition's: the first consumer
# registers a thread: the second consumer's and the producer's (the first consumer takes what is left
# of MAX_REGISTERS x 12 warps x 32 threads)
CONSUMER_REGISTERS, PRODUCER_REGISTERS, MAX_REGISTERS = 232, 24, 168


@gluon.jit
def _softmax_step(s, m_i, l_i, qk_scale, rows, cols, MASKED: gl.constexpr):
    """(p, new row max, new row sum, the factor the old ones scale by) of one tile of raw scores s."""
    s = s * qk_scale
    if MASKED:
        s = gl.where(cols[None, :] <= rows[:, None], s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(s - m_new[:, None])
    return p, m_new, l_i * alpha + gl.sum(p, axis=1), alpha


@gluon.jit
def _softmax(s, m_i, l_i, qk_scale, rows, cols, diagonal, CAUSAL: gl.constexpr):
    """_softmax_step, masked on causal's diagonal tile alone."""
    if CAUSAL:
        if diagonal:
            p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, rows, cols, True)
        else:
            p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, rows, cols, False)
    else:
        p, m_i, l_i, alpha = _softmax_step(s, m_i, l_i, qk_scale, rows, cols, False)
    return p, m_i, l_i, alpha


@gluon.jit
def _producer(descs, bars, bufs, scalars, CAUSAL: gl.constexpr, STAGES: gl.constexpr):
    """One warp: each consumer's query rows, then every key tile's K and V through the copy engine into the
    rings, each slot once both consumers have released it."""
    q_desc, k_desc, v_desc, o_desc = descs
    q_bars, k_ready, k_empty, v_ready, v_empty = bars
    q_halves, k_ring, v_ring = bufs
    q_row0, kv_row0, n_tiles, q_pos0, qk_scale, Lse = scalars
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    HALF_M: gl.constexpr = q_desc.block_type.shape[0]
    for h in gl.static_range(2):
        mbarrier.expect(q_bars.index(h), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [q_row0 + h * HALF_M, 0], q_bars.index(h), q_halves.index(h))
    for j in range(n_tiles):
        slot, phase = j % STAGES, (j // STAGES) & 1
        mbarrier.wait(k_empty.index(slot), phase ^ 1)  # a fresh mbarrier reads as phase 1 completed
        mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [kv_row0 + j * TILE_N, 0], k_ready.index(slot), k_ring.index(slot))
        mbarrier.wait(v_empty.index(slot), phase ^ 1)
        mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [kv_row0 + j * TILE_N, 0], v_ready.index(slot), v_ring.index(slot))


@gluon.jit
def _consumer(descs, bars, bufs, scalars, HALF: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr):
    """Four warps, one warpgroup: 64 query rows (half HALF of the program's 128) through every key tile,
    then their output through the copy engine (from their query tile's shared memory) and their lse."""
    q_desc, k_desc, v_desc, o_desc = descs
    q_bars, k_ready, k_empty, v_ready, v_empty = bars
    q_halves, k_ring, v_ring = bufs
    q_row0, kv_row0, n_tiles, q_pos0, qk_scale, Lse = scalars
    HALF_M: gl.constexpr = q_desc.block_type.shape[0]
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[1]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, TILE_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    q_smem = q_halves.index(HALF)

    rows = q_pos0 + HALF * HALF_M + gl.arange(0, HALF_M, layout=gl.SliceLayout(1, s_layout))
    cols = gl.arange(0, TILE_N, layout=gl.SliceLayout(0, s_layout))
    m_i = gl.full([HALF_M], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([HALF_M], gl.float32, layout=gl.SliceLayout(1, s_layout))
    s_zero = gl.zeros([HALF_M, TILE_N], gl.float32, layout=s_layout)
    acc = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=o_layout)

    mbarrier.wait(q_bars.index(HALF), 0)
    mbarrier.wait(k_ready.index(0), 0)
    s = warpgroup_mma(q_smem, k_ring.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
    mbarrier.arrive(k_empty.index(0), count=1)
    p, m_i, l_i, alpha = _softmax(s, m_i, l_i, qk_scale, rows, cols, n_tiles == 1, CAUSAL)
    p = gl.convert_layout(p.to(v_desc.dtype), p_layout)  # carried as the 16-bit operand: 32 registers, not 64
    for j in range(1, n_tiles):
        slot, prev = j % STAGES, (j - 1) % STAGES
        mbarrier.wait(k_ready.index(slot), (j // STAGES) & 1)
        s = warpgroup_mma(q_smem, k_ring.index(slot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        mbarrier.wait(v_ready.index(prev), ((j - 1) // STAGES) & 1)
        acc = warpgroup_mma(p, v_ring.index(prev), acc, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))  # S_j done; P_{j-1} V_{j-1} may still run
        mbarrier.arrive(k_empty.index(slot), count=1)
        p_next, m_i, l_i, alpha = _softmax(s, m_i, l_i, qk_scale, rows, cols + j * TILE_N, j == n_tiles - 1,
                                           CAUSAL)
        p_next = gl.convert_layout(p_next.to(v_desc.dtype), p_layout)
        acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p))  # p: the operand in flight
        mbarrier.arrive(v_empty.index(prev), count=1)
        p = p_next
        acc = acc * gl.convert_layout(alpha, o_rows)[:, None]
    last = n_tiles - 1
    mbarrier.wait(v_ready.index(last % STAGES), (last // STAGES) & 1)
    acc = warpgroup_mma(p, v_ring.index(last % STAGES), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    mbarrier.arrive(v_empty.index(last % STAGES), count=1)

    gl.store(Lse + (q_row0 + HALF * HALF_M) + gl.arange(0, HALF_M, layout=gl.SliceLayout(1, s_layout)),
             m_i + gl.log2(l_i))
    acc = acc / gl.convert_layout(l_i, o_rows)[:, None]
    q_smem.store(acc.to(o_desc.dtype))  # every MMA reading these query rows is done: their tile holds the output
    fence_async_shared()
    tma.async_copy_shared_to_global(o_desc, [q_row0 + HALF * HALF_M, 0], q_smem)
    tma.store_wait(pendings=0)


@gluon.jit
def _first_consumer(descs, bars, bufs, scalars, CAUSAL: gl.constexpr, STAGES: gl.constexpr):
    _consumer(descs, bars, bufs, scalars, 0, CAUSAL, STAGES)


@gluon.jit
def _second_consumer(descs, bars, bufs, scalars, CAUSAL: gl.constexpr, STAGES: gl.constexpr):
    _consumer(descs, bars, bufs, scalars, 1, CAUSAL, STAGES)


@gluon.jit
def _attention_forward(q_desc, k_desc, v_desc, o_desc, Lse, qk_scale, n_q_heads, n_kv_heads, seq,
                       CAUSAL: gl.constexpr, STAGES: gl.constexpr, CONSUMER_REGISTERS: gl.constexpr,
                       PRODUCER_REGISTERS: gl.constexpr):
    """Program (row block, batch x head): 128 query rows of one head."""
    HALF_M: gl.constexpr = q_desc.block_type.shape[0]
    TILE_N: gl.constexpr = k_desc.block_type.shape[0]
    row_block = gl.program_id(0)
    head_row = gl.program_id(1)  # batch x n_q_heads + q head
    batch, q_head = head_row // n_q_heads, head_row % n_q_heads
    kv_row0 = (batch * n_kv_heads + q_head // (n_q_heads // n_kv_heads)) * seq
    q_pos0 = row_block * 2 * HALF_M
    n_tiles = (q_pos0 + 2 * HALF_M) // TILE_N if CAUSAL else seq // TILE_N

    q_halves = gl.allocate_shared_memory(q_desc.dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    k_ring = gl.allocate_shared_memory(k_desc.dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_ring = gl.allocate_shared_memory(v_desc.dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for h in gl.static_range(2):
        mbarrier.init(q_bars.index(h), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        # one arrival a consumer: Gluon's mbarrier.arrive syncs the partition's 128 threads (bar.sync 0, 128)
        # and one thread arrives (a count of 256 would never complete, and the producer would hang)
        mbarrier.init(k_empty.index(i), count=2)
        mbarrier.init(v_empty.index(i), count=2)

    descs = (q_desc, k_desc, v_desc, o_desc)
    bars = (q_bars, k_ready, k_empty, v_ready, v_empty)
    bufs = (q_halves, k_ring, v_ring)
    scalars = (head_row * seq + q_pos0, kv_row0, n_tiles, q_pos0, qk_scale, Lse)
    gl.warp_specialize([
        (_first_consumer, (descs, bars, bufs, scalars, CAUSAL, STAGES)),
        (_second_consumer, (descs, bars, bufs, scalars, CAUSAL, STAGES)),
        (_producer, (descs, bars, bufs, scalars, CAUSAL, STAGES)),
    ], [4, 1], [CONSUMER_REGISTERS, PRODUCER_REGISTERS])


def refusal(q, k, v):
    """Why this first version cannot run q, k, v, or None."""
    if not (q.is_cuda and torch.cuda.get_device_capability(q.device)[0] == 9):
        return "the Gluon forward is written for Hopper (sm_90)"
    if q.dtype not in (torch.bfloat16, torch.float16) or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"the Gluon forward takes 16-bit q, k, v of one dtype, not {q.dtype}, {k.dtype}, {v.dtype}"
    if q.dim() != 4 or k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[2:]:
        return f"the Gluon forward takes q (B, Hq, S, D), k and v (B, Hkv, S, D), not {tuple(q.shape)}, " \
               f"{tuple(k.shape)}, {tuple(v.shape)}"
    if q.shape[-1] != 128 or q.shape[2] % BLOCK_M:
        return f"the Gluon forward takes head dim 128 and a length that is a multiple of {BLOCK_M}, not {tuple(q.shape)}"
    if q.shape[1] % k.shape[1]:
        return f"query heads {q.shape[1]} are not a multiple of key heads {k.shape[1]}"
    return None


def descriptor_layout(dtype):
    """The shared-memory layout of every tile the copy engine moves (64 or 128 rows of 128 16-bit values:
    NVMMASharedLayout.get_default_for gives the two the same layout)."""
    return gl.NVMMASharedLayout.get_default_for([BLOCK_N, 128], gl.bfloat16 if dtype == torch.bfloat16
                                                else gl.float16)


def forward_launcher(q, k, v, causal, scale=None):
    """A launch of the forward on these tensors: `launcher()` launches and returns (out, lse), lse in log2
    units; checks, the output's allocation and the tensor descriptors happen once here, not in every
    timed call. q (B, Hq, S, 128), k, v (B, Hkv, S, 128)."""
    why = refusal(q, k, v)
    if why:
        raise ValueError(why)
    batch, n_q_heads, seq, head_dim = q.shape
    q2, k2, v2 = (t.contiguous().view(-1, head_dim) for t in (q, k, v))
    out = torch.empty_like(q2)
    lse = torch.empty(batch, n_q_heads, seq, device=q.device, dtype=torch.float32)
    layout = descriptor_layout(q.dtype)
    q_desc, o_desc = (TensorDescriptor.from_tensor(t, [BLOCK_M // 2, head_dim], layout) for t in (q2, out))
    k_desc, v_desc = (TensorDescriptor.from_tensor(t, [BLOCK_N, head_dim], layout) for t in (k2, v2))
    qk_scale = (scale if scale is not None else head_dim ** -0.5) * LOG2E

    def launcher():
        _attention_forward[(seq // BLOCK_M, batch * n_q_heads)](
            q_desc, k_desc, v_desc, o_desc, lse, qk_scale, n_q_heads, k.shape[1], seq, CAUSAL=causal, STAGES=STAGES,
            CONSUMER_REGISTERS=CONSUMER_REGISTERS, PRODUCER_REGISTERS=PRODUCER_REGISTERS, num_warps=WARPS,
            maxnreg=MAX_REGISTERS)
        return out.view(q.shape), lse

    return launcher


def forward(q, k, v, causal, scale=None):
    """(out, lse) of attention over q (B, Hq, S, 128), k, v (B, Hkv, S, 128); lse in log2 units."""
    return forward_launcher(q, k, v, causal, scale)()
