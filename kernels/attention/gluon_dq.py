"""Our attention's dQ in Gluon for Hopper (sm_90): the forward's schedule (gluon_flash.py) with dQ's three
products in place of the softmax's two.

Why: with dK/dV in Gluon (gluon_backward.py), dQ's Triton kernel is the backward's other half (session 24,
H200, gqa_8 at llama-3-8b-s4k: dK/dV 2.166 ms, dQ 1.555, the forward 0.920 of a 4.530 ms forward+backward;
Flex 5.464). Its tl.dot waits at once, as every Triton kernel's did before gluon_flash.py.

A program owns 128 query rows of one head. One producer warp loads each consumer's 64 rows of Q and dO
once, then K and V tile by tile into rings of STAGES slots (the forward's walk: the same key tiles, the
same masks). Two consumer warpgroups of 64 rows run apart, so one's exp2 overlaps the other's products:

    S = Q K^T,  dP = dO V^T   (issued together, waited together; under softcap dP after P),
    P = exp2(S - lse),  dS = P o (dP - delta),  dQ += dS K,

V's slot released once dP is done, K's once dQ's product is. dQ leaves scaled, through pointer stores. Score
functions are the forward's: softcap's derivative from its tanh, ALiBi's bias. DSA's selection masks every tile by
the forward's words (gluon_selection.py: S's accumulator here is the forward's, 64 rows x 128 keys a consumer).

Scope as gluon_flash.refusal's (Sq == Skv, S a multiple of 128, head dim 128, 16-bit, strides the copy
engine reads).
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from kernels.attention import gluon_flash
from kernels.attention.gluon_backward import row_offsets
from kernels.attention.gluon_rings import load_key_tiles, ring
from kernels.attention.gluon_selection import checked_words, load_words, selected
from kernels.attention.gluon_softmax import LOG2E, _tanh, alibi_keys, alibi_lse, alibi_rows_tile, alibi_slope, issue_s
from kernels.attention.gluon_walk import key_walk
from kernels.attention.triton_flash import _bounds, doc_start_arg

BLOCK_M = 128  # query rows a program: two consumer warpgroups of 64
BLOCK_N = 128  # keys a tile
STAGES = 2  # K and V tiles in flight each
WARPS = 4
# dQ's float32 accumulator of 64 x 128 takes 64 registers a thread of a consumer, S and dP 64 each
CONSUMER_REGISTERS, PRODUCER_REGISTERS, MAX_REGISTERS = 240, 24, 168


@gluon.jit
def _producer(descs, bars, bufs, walk, scalars, masks, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
              PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, SOFTCAP: gl.constexpr, ALIBI: gl.constexpr):
    """One warp: each consumer's Q and dO rows, then every key tile of the walk's K and V into the rings,
    each slot once both consumers have released it."""
    q_desc, k_desc, v_desc, do_desc = descs
    row_bars, keys, values = bars
    q_halves, do_halves = bufs[0], bufs[1]
    batch, q_head, kv_head, q_pos0, first_tile, n_tiles, _, _ = walk
    HALF_M: gl.constexpr = q_desc.block_type.shape[2]
    for h in gl.static_range(2):
        mbarrier.expect(row_bars.index(h), q_desc.block_type.nbytes + do_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [batch, q_head, q_pos0 + h * HALF_M, 0], row_bars.index(h),
                                        q_halves.index(h))
        tma.async_copy_global_to_shared(do_desc, [batch, q_head, q_pos0 + h * HALF_M, 0], row_bars.index(h),
                                        do_halves.index(h))
    load_key_tiles(k_desc, v_desc, keys, values, batch, kv_head, first_tile * k_desc.block_type.shape[2], n_tiles, 0)


@gluon.jit
def _consumer(descs, bars, bufs, walk, scalars, masks, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
              PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, SOFTCAP: gl.constexpr, ALIBI: gl.constexpr,
              SELECTION: gl.constexpr, HALF: gl.constexpr):
    """Four warps, one warpgroup: 64 query rows (half HALF of the program's 128) through every key tile of
    the walk, then their dQ (scaled)."""
    q_desc, k_desc, v_desc, do_desc = descs
    row_bars, keys, values = bars
    k_ring, k_ready, k_empty = keys
    v_ring, v_ready, v_empty = values
    q_halves, do_halves, alibi_a, alibi_b = bufs
    batch, q_head, kv_head, q_pos0, first_tile, n_tiles, unmasked_lo, unmasked_hi = walk
    Lse, Delta, DQ, strides, n_q_heads, sm_scale, softcap = scalars
    seq, window, prefix, DocStart, Selection = masks
    STAGES: gl.constexpr = k_ring.shape[0]
    HALF_M: gl.constexpr = q_desc.block_type.shape[2]
    TILE_N: gl.constexpr = k_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = q_desc.block_type.shape[3]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, TILE_N, 16])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, HEAD_DIM, 16])
    operand: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    # ALiBi's bias by key through the tensor cores (`_dq` fills the operands); under a softcap it follows the tanh
    ALIBI_MMA: gl.constexpr = ALIBI and not SOFTCAP
    q_smem = q_halves.index(HALF).reshape([HALF_M, HEAD_DIM])
    do_smem = do_halves.index(HALF).reshape([HALF_M, HEAD_DIM])

    rows = q_pos0 + HALF * HALF_M + gl.arange(0, HALF_M, layout=gl.SliceLayout(1, s_layout))
    lo, hi = _bounds(rows, batch, seq, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX, DOCUMENTS)
    stat = (batch * n_q_heads + q_head) * seq + rows
    lse, delta = gl.load(Lse + stat), gl.load(Delta + stat)
    scale_log2 = sm_scale * LOG2E
    slope = alibi_slope(q_head, n_q_heads)
    s_zero = gl.zeros([HALF_M, TILE_N], gl.float32, layout=s_layout)
    dq = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=acc_layout)

    mbarrier.wait(row_bars.index(HALF), 0)
    for j in range(n_tiles):
        slot, phase = j % STAGES, (j // STAGES) & 1
        tile = first_tile + j
        k_tile = k_ring.index(slot).reshape([TILE_N, HEAD_DIM])
        v_tile = v_ring.index(slot).reshape([TILE_N, HEAD_DIM])
        # the tile's selection bits (0 without), loaded before the waits so that their latency hides behind them
        words = load_words(Selection, batch * seq + q_pos0 + HALF * HALF_M, tile, seq, HALF_M, SELECTION)
        mbarrier.wait(k_ready.index(slot), phase)
        s = issue_s(q_smem, k_tile, s_zero, alibi_a, alibi_b, ALIBI_MMA)
        mbarrier.wait(v_ready.index(slot), phase)
        if SOFTCAP:
            s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
        else:
            dp = warpgroup_mma(do_smem, v_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
            s, dp = warpgroup_mma_wait(num_outstanding=0, deps=(s, dp))
        cols = tile * TILE_N + gl.arange(0, TILE_N, layout=gl.SliceLayout(0, s_layout))
        s = s * scale_log2
        if SOFTCAP:  # d (c tanh(s / c)) / ds = 1 - tanh^2, from the tanh itself
            t = _tanh(s * (1.0 / (softcap * LOG2E)))
            s = (softcap * LOG2E) * t
        if ALIBI and SOFTCAP:
            s = s + slope * (cols[None, :] - rows[:, None]).to(gl.float32)
        if SELECTION:  # every tile: the bits alone, cleared past each row's position (plain causal attention)
            s = gl.where(selected(words, s), s, float("-inf"))
        elif (tile < unmasked_lo) | (tile >= unmasked_hi):  # (not gluon_softmax.visible: it spilled 24 -> 32 bytes)
            s = gl.where((cols[None, :] >= lo[:, None]) & (cols[None, :] <= hi[:, None]), s, float("-inf"))
        # S holds slope (k - tile's first key) (ALIBI_MMA); the rest of the bias, slope (tile's first key
        # - q), a value a row, joins the lse: exp2's argument then costs causal's ops a score
        p = gl.exp2(s - alibi_lse(lse, slope, tile * TILE_N - rows, ALIBI_MMA)[:, None])
        if SOFTCAP:
            # the derivative folded into P before dP's product: S, dP, the tanh and dQ's accumulator
            # together spilled 328 bytes a thread and ran softcap's forward+backward 1.23x slower (session 24)
            p = p * (1.0 - t * t)
            dp = warpgroup_mma(do_smem, v_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
            dp = warpgroup_mma_wait(num_outstanding=0, deps=(dp, ))
        mbarrier.arrive(v_empty.index(slot), count=1)
        ds = p * (dp - delta[:, None])
        dq = warpgroup_mma(gl.convert_layout(ds.to(q_desc.dtype), operand), k_tile, dq, is_async=True)
        dq = warpgroup_mma_wait(num_outstanding=0, deps=(dq, ))
        mbarrier.arrive(k_empty.index(slot), count=1)

    offsets = row_offsets(batch, q_head, q_pos0 + HALF * HALF_M, strides, acc_layout, HALF_M, HEAD_DIM)
    gl.store(DQ + offsets, (dq * sm_scale).to(DQ.dtype.element_ty))


@gluon.jit
def _dq(q_desc, k_desc, v_desc, do_desc, Lse, Delta, DQ, DocStart, Selection, stride_b, stride_h, stride_s,
        n_q_heads, n_kv_heads, seq, sm_scale, softcap, window, prefix,
        CAUSAL: gl.constexpr, WINDOW: gl.constexpr, PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr,
        SOFTCAP: gl.constexpr, ALIBI: gl.constexpr, SELECTION: gl.constexpr, STAGES: gl.constexpr,
        CONSUMER_REGISTERS: gl.constexpr, PRODUCER_REGISTERS: gl.constexpr):
    """Program (row block, batch x head): 128 query rows of one head."""
    HALF_M: gl.constexpr = q_desc.block_type.shape[2]
    TILE_N: gl.constexpr = k_desc.block_type.shape[2]
    # the forward's order: row blocks further down walk more key tiles under causal and prefix masks
    q_pos0 = (gl.num_programs(0) - 1 - gl.program_id(0)) * 2 * HALF_M
    head_row = gl.program_id(1)  # batch x n_q_heads + q head
    batch, q_head = head_row // n_q_heads, head_row % n_q_heads
    kv_head = q_head // (n_q_heads // n_kv_heads)
    first_tile, end_tile, unmasked_lo, unmasked_hi = key_walk(q_pos0, batch, seq, window, prefix, DocStart, CAUSAL,
                                                               WINDOW, PREFIX, DOCUMENTS, 2 * HALF_M, TILE_N)

    q_halves = gl.allocate_shared_memory(q_desc.dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    do_halves = gl.allocate_shared_memory(do_desc.dtype, [2] + do_desc.block_type.shape, do_desc.layout)
    row_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for h in gl.static_range(2):
        mbarrier.init(row_bars.index(h), count=1)

    descs = (q_desc, k_desc, v_desc, do_desc)
    bars = (row_bars, ring(k_desc, STAGES), ring(v_desc, STAGES))
    # `_consumer`'s ALIBI_MMA: the program's head's slope and the key columns, both operands in shared memory
    alibi_a = alibi_rows_tile(alibi_slope(q_head, n_q_heads), sm_scale * LOG2E, q_desc.dtype, HALF_M,
                              ALIBI and not SOFTCAP)
    bufs = (q_halves, do_halves, alibi_a, alibi_keys(q_desc.dtype, TILE_N, ALIBI and not SOFTCAP))
    walk = (batch, q_head, kv_head, q_pos0, first_tile, end_tile - first_tile, unmasked_lo, unmasked_hi)
    scalars = (Lse, Delta, DQ, (stride_b, stride_h, stride_s), n_q_heads, sm_scale, softcap)
    masks = (seq, window, prefix, DocStart, Selection)
    # the switches and each consumer's half travel as arguments of their own (gluon_flash says why)
    gl.warp_specialize([
        (_consumer, (descs, bars, bufs, walk, scalars, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI,
                     SELECTION, 0)),
        (_consumer, (descs, bars, bufs, walk, scalars, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI,
                     SELECTION, 1)),
        (_producer, (descs, bars, bufs, walk, scalars, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI)),
    ], [4, 1], [CONSUMER_REGISTERS, PRODUCER_REGISTERS])


def refusal(q, k, v, do, dq):
    """Why this kernel cannot run these (triton_backward_kernels.py's dQ kernel does), or None. lse and delta
    are the backward's own, (B, Hq, S) float32 and contiguous, as the kernel indexes them."""
    if do.shape != q.shape or dq.shape != q.shape:
        return f"dO and dQ take q's shape {tuple(q.shape)}, not {tuple(do.shape)}, {tuple(dq.shape)}"
    if q.shape[0] * q.shape[1] >= 2 ** 16:
        return f"its grid's second axis is batch x query heads, at most 65,535, not {q.shape[0] * q.shape[1]}"
    return gluon_flash.refusal(q, k, v) or gluon_flash.refusal(do, k, v) or gluon_flash.refusal(dq, k, v)


def launch_dq(q, k, v, do, lse, delta, dq, *, causal, window=None, prefix=None, doc_start=None, softcap=None,
              alibi=False, scale=None, selection=None):
    """dQ (scaled) into dq (q's shape, any strides) from the forward's lse (log2 units) and the preprocess's
    delta ((B, Hq, S) float32, contiguous) and dO (q's shape). selection: DSA's words, as the forward reads them
    (gluon_selection.selection_words), with plain causal attention."""
    selection = checked_words(selection, q, causal=causal, doc_start=doc_start, window=window, prefix=prefix,
                              softcap=softcap, alibi=alibi)
    batch, n_q_heads, seq, head_dim = q.shape
    layout = gluon_flash.descriptor_layout(q.dtype)
    q_desc, do_desc = (TensorDescriptor.from_tensor(t, [1, 1, BLOCK_M // 2, head_dim], layout) for t in (q, do))
    k_desc, v_desc = (TensorDescriptor.from_tensor(t, [1, 1, BLOCK_N, head_dim], layout) for t in (k, v))
    doc_arg = doc_start_arg(doc_start, q)
    _dq[(seq // BLOCK_M, batch * n_q_heads)](
        q_desc, k_desc, v_desc, do_desc, lse, delta, dq, doc_arg, q if selection is None else selection,
        *dq.stride()[:3], n_q_heads, k.shape[1], seq,
        scale if scale is not None else head_dim ** -0.5, softcap or 1.0, window or 0, prefix or 0,
        CAUSAL=causal, WINDOW=window is not None, PREFIX=prefix is not None, DOCUMENTS=doc_start is not None,
        SOFTCAP=softcap is not None, ALIBI=alibi, SELECTION=selection is not None, STAGES=STAGES,
        CONSUMER_REGISTERS=CONSUMER_REGISTERS, PRODUCER_REGISTERS=PRODUCER_REGISTERS, num_warps=WARPS,
        maxnreg=MAX_REGISTERS)
