"""Our attention's dK/dV in Gluon for Hopper (sm_90).

Why: dK/dV's Triton kernel was half our forward+backward (session 23, H200, gqa_8 at llama-3-8b-s4k: 2.484
of 4.975 ms; Flex 5.598, SDPA 4.195). Under Triton 3.6.0 its tl.dot waits at once and its warps move in
lockstep, the forward's story before gluon_flash.py took it to cuDNN's speed. This kernel is that forward's
schedule turned to the backward, FlashAttention-2's dK/dV half (dQ is gluon_dq.py's, on its side stream).
Measured (session 24, same case): dK/dV 2.166 ms, forward+backward 4.530 against Flex's 5.464 (1.206x).

A program owns 128 keys of one KV head. One producer warp loads its K and V once, then each query
row block of 64 rows (every query head of the group, the blocks that see the keys) as Q and dO tiles
into rings of STAGES slots through the copy engine. Two consumer warpgroups own 64 keys each and run
apart (one's exp2 beside the other's products): per row block, transposed as triton_backward_kernels.py's
kernel works (keys x rows, so P and dS feed their products as computed),

    S^T = K Q^T,  P^T = exp2(S^T - lse),  dP^T = V dO^T,  dS^T = P^T o (dP^T - delta),
    dV += P^T dO,  dK += dS^T Q,

S^T's product waited for alone, then dV's and dP^T's issued together, then dK's; each slot released once
the products that read it are done (dO's before dK's product, Q's after). dK leaves scaled, both through pointer
stores. Masks and score functions are the forward's (`gluon_flash._bounds`, softcap's derivative from its tanh,
ALiBi's bias). DSA's selection masks every row block by each key's words (gluon_selection.key_words: S^T's columns
are laid out as the forward's scores' are).

Scope as gluon_flash.refusal's (Sq == Skv, S a multiple of 128, head dim 128, 16-bit, strides the copy
engine reads).
"""

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from kernels.attention import gluon_flash
from kernels.attention.gluon_rings import fill, ring
from kernels.attention.gluon_selection import checked_words, load_key_words, selected_keys
from kernels.attention.gluon_softmax import LOG2E, _tanh, alibi_slope
from kernels.attention.triton_flash import _bounds, doc_start_arg

BLOCK_N = 128  # keys a program: two consumer warpgroups of 64
BLOCK_M = 64  # query rows a step
STAGES = 2  # Q and dO tiles in flight each
WARPS = 4
# two float32 accumulators of 64 x 128 take 128 registers a thread of a consumer, its two 64 x 64 score
# tiles 64 more
CONSUMER_REGISTERS, PRODUCER_REGISTERS, MAX_REGISTERS = 240, 24, 168


@gluon.jit
def _row_blocks(batch, k0, seq, window, prefix, DocStart, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
                PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, TILE_M: gl.constexpr, TILE_N: gl.constexpr):
    """(first, whole_first, whole_end, end): the row blocks that see keys k0..k0 + TILE_N - 1 are
    first..end - 1, those that see all of them whole_first..whole_end - 1 (inside), from each block's first
    and last rows' bounds (every bound grows with the position, as gluon_flash's walk assumes)."""
    k1 = k0 + TILE_N - 1
    n_blocks = seq // TILE_M
    first, end, whole_first, whole_end = n_blocks, 0, n_blocks, 0
    for block in range(n_blocks):
        lo0, hi0 = _bounds(block * TILE_M, batch, seq, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX, DOCUMENTS)
        lo1, hi1 = _bounds(block * TILE_M + TILE_M - 1, batch, seq, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX,
                           DOCUMENTS)
        sees = (hi1 >= k0) & (lo0 <= k1)
        whole = (lo1 <= k0) & (hi0 >= k1)
        first = gl.where(sees, gl.minimum(first, block), first)
        end = gl.where(sees, block + 1, end)
        whole_first = gl.where(whole, gl.minimum(whole_first, block), whole_first)
        whole_end = gl.where(whole, block + 1, whole_end)
    first = gl.minimum(first, end)
    none_whole = whole_end <= whole_first
    whole_first = gl.where(none_whole, end, whole_first)
    whole_end = gl.where(none_whole, end, whole_end)
    return first, whole_first, whole_end, end


@gluon.jit
def row_offsets(batch, head, row0, strides, layout: gl.constexpr, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr):
    """Offsets, in `layout` (an accumulator's), of rows row0.. (ROWS of them) of one head of a (B, H, S, D)
    tensor with `strides` (its first three; the head dim contiguous): where a consumer stores its gradient."""
    stride_b, stride_h, stride_s = strides
    rows = row0 + gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    dims = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    return batch * stride_b + head * stride_h + rows[:, None] * stride_s + dims[None, :]


@gluon.jit
def alibi_key_part(slope, keys, row0):
    """ALiBi's bias slope (k - q) on the scores S^T of keys `keys` against the query rows row0 ..
    row0 + BLOCK_M - 1 is slope (k - row0) - slope (q - row0): this, the key's part, a value a key; the
    row's the lse holds, shifted by the backward's preprocess (triton_backward_kernels._preprocess_kernel,
    lse + slope (q mod BLOCK_M)). A score then pays one add where slope (k - q) took an integer subtract,
    a conversion and a fused multiply-add (sm_90, Triton 3.6.0: a consumer's step 710 -> 621 SASS
    instructions, causal's 586); the row's part kept in registers instead (a head's 64 values, the same every
    step of the head) spilled into the loop. Precision: exp2's argument now takes three float32 roundings at
    the lse's size (this product, its fused add to the score, the preprocess's shift) where slope (k - q) took
    one, which matters without a causal mask only, where the lse grows with the keys: a read-only review's
    float32 model at the steepest slope (1.21 in log2 units) put the argument's largest error at 2.4e-4 ->
    7.0e-4 at 4k keys, 2.0e-3 -> 5.4e-3 at 32k, 7.8e-3 -> 2.2e-2 at 128k, where the lse's own float32
    rounding already adds up to 7.8e-3 (P's error about 1.1% -> 2.1%, against bfloat16's 0.4%); under causal,
    window and prefix masks at most 2.5e-5."""
    return slope * (keys - row0).to(gl.float32)


@gluon.jit
def _producer(descs, bars, bufs, walk, scalars, masks, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
              PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, SOFTCAP: gl.constexpr, ALIBI: gl.constexpr):
    """One warp: the program's K and V, then each step's Q and dO tiles into the rings, a slot once both
    consumers have released it."""
    q_desc, k_desc, v_desc, do_desc = descs
    kv_bar, queries, grads = bars
    k_smem, v_smem = bufs
    batch, kv_head, group, k0, first, n_seeing, _, _ = walk
    STAGES: gl.constexpr = queries[0].shape[0]
    TILE_M: gl.constexpr = q_desc.block_type.shape[2]
    mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [batch, kv_head, k0, 0], kv_bar, k_smem)
    tma.async_copy_global_to_shared(v_desc, [batch, kv_head, k0, 0], kv_bar, v_smem)
    for step in range(group * n_seeing):
        slot, phase = step % STAGES, (step // STAGES) & 1
        q_head = kv_head * group + step // n_seeing
        row = (first + step % n_seeing) * TILE_M
        fill(q_desc, queries, slot, phase, batch, q_head, row)
        fill(do_desc, grads, slot, phase, batch, q_head, row)


@gluon.jit
def _consumer(descs, bars, bufs, walk, scalars, masks, CAUSAL: gl.constexpr, WINDOW: gl.constexpr,
              PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr, SOFTCAP: gl.constexpr, ALIBI: gl.constexpr,
              SELECTION: gl.constexpr, HALF: gl.constexpr):
    """Four warps, one warpgroup: 64 keys (half HALF of the program's 128) against every step's row
    block, then their dK (scaled) and dV."""
    q_desc, k_desc, v_desc, do_desc = descs
    kv_bar, queries, grads = bars
    q_ring, q_ready, q_empty = queries
    do_ring, do_ready, do_empty = grads
    k_smem, v_smem = bufs
    batch, kv_head, group, k0, first, n_seeing, whole_first, whole_end = walk
    Lse, Delta, DK, DV, strides, n_q_heads, sm_scale, softcap = scalars
    seq, window, prefix, DocStart, KeyWords = masks
    STAGES: gl.constexpr = q_ring.shape[0]
    TILE_M: gl.constexpr = q_desc.block_type.shape[2]
    TILE_N: gl.constexpr = k_desc.block_type.shape[2]
    HEAD_DIM: gl.constexpr = k_desc.block_type.shape[3]
    HALF_N: gl.constexpr = TILE_N // 2
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, TILE_M, 16])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, HEAD_DIM, 16])
    operand: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    keys = k0 + HALF * HALF_N + gl.arange(0, HALF_N, layout=gl.SliceLayout(1, s_layout))
    k_half = k_smem.reshape([TILE_N, HEAD_DIM]).slice(HALF * HALF_N, HALF_N)
    v_half = v_smem.reshape([TILE_N, HEAD_DIM]).slice(HALF * HALF_N, HALF_N)
    s_zero = gl.zeros([HALF_N, TILE_M], gl.float32, layout=s_layout)
    dk = gl.zeros([HALF_N, HEAD_DIM], gl.float32, layout=acc_layout)
    dv = gl.zeros([HALF_N, HEAD_DIM], gl.float32, layout=acc_layout)
    scale_log2 = sm_scale * LOG2E

    mbarrier.wait(kv_bar, 0)
    for step in range(group * n_seeing):
        slot, phase = step % STAGES, (step // STAGES) & 1
        q_head = kv_head * group + step // n_seeing
        block = first + step % n_seeing
        q_tile = q_ring.index(slot).reshape([TILE_M, HEAD_DIM])
        do_tile = do_ring.index(slot).reshape([TILE_M, HEAD_DIM])
        # the block's selection bits of this half's keys (0 without), loaded before the waits that hide them
        words = load_key_words(KeyWords, batch * seq + k0 + HALF * HALF_N, block, seq, HALF_N, SELECTION)
        mbarrier.wait(q_ready.index(slot), phase)
        st = warpgroup_mma(k_half, q_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        rows = block * TILE_M + gl.arange(0, TILE_M, layout=gl.SliceLayout(0, s_layout))
        stat = (batch * n_q_heads + q_head) * seq + rows
        lse, delta = gl.load(Lse + stat), gl.load(Delta + stat)
        st = warpgroup_mma_wait(num_outstanding=0, deps=(st, ))
        s = st * scale_log2
        slope_term = 1.0
        if SOFTCAP:  # d (c tanh(s / c)) / ds = 1 - tanh^2, from the tanh itself
            t = _tanh(s * (1.0 / (softcap * LOG2E)))
            slope_term = 1.0 - t * t
            s = (softcap * LOG2E) * t
        if ALIBI:  # the key's part of the bias; the row's is in the lse (`alibi_key_part`)
            s = s + alibi_key_part(alibi_slope(q_head, n_q_heads), keys, block * TILE_M)[:, None]
        if SELECTION:  # every block: the bits alone, cleared before each key's position (plain causal attention)
            s = gl.where(selected_keys(words, s), s, float("-inf"))
        elif (block < whole_first) | (block >= whole_end):
            lo, hi = _bounds(rows, batch, seq, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX, DOCUMENTS)
            s = gl.where((keys[:, None] >= lo[None, :]) & (keys[:, None] <= hi[None, :]), s, float("-inf"))
        pt = gl.exp2(s - lse[None, :])
        # dP^T's product after P^T is formed, not beside S^T's: both score tiles live at once took the
        # registers two accumulators leave (a consumer spilled at 240)
        mbarrier.wait(do_ready.index(slot), phase)
        dv = warpgroup_mma(gl.convert_layout(pt.to(do_desc.dtype), operand), do_tile, dv, is_async=True)
        dpt = warpgroup_mma(v_half, do_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
        dv, dpt = warpgroup_mma_wait(num_outstanding=0, deps=(dv, dpt))
        mbarrier.arrive(do_empty.index(slot), count=1)  # dK's product reads Q alone: dO's slot refills now
        dst = pt * (dpt - delta[None, :]) * slope_term
        dk = warpgroup_mma(gl.convert_layout(dst.to(q_desc.dtype), operand), q_tile, dk, is_async=True)
        dk = warpgroup_mma_wait(num_outstanding=0, deps=(dk, ))
        mbarrier.arrive(q_empty.index(slot), count=1)

    offsets = row_offsets(batch, kv_head, k0 + HALF * HALF_N, strides, acc_layout, HALF_N, HEAD_DIM)
    gl.store(DK + offsets, (dk * sm_scale).to(DK.dtype.element_ty))
    gl.store(DV + offsets, dv.to(DV.dtype.element_ty))


@gluon.jit
def _dkdv(q_desc, k_desc, v_desc, do_desc, Lse, Delta, DK, DV, DocStart, KeyWords, stride_b, stride_h, stride_s,
          n_q_heads, n_kv_heads, seq, sm_scale, softcap, window, prefix,
          CAUSAL: gl.constexpr, WINDOW: gl.constexpr, PREFIX: gl.constexpr, DOCUMENTS: gl.constexpr,
          SOFTCAP: gl.constexpr, ALIBI: gl.constexpr, SELECTION: gl.constexpr, STAGES: gl.constexpr,
          CONSUMER_REGISTERS: gl.constexpr, PRODUCER_REGISTERS: gl.constexpr):
    """Program (key tile, batch x KV head): 128 keys of one KV head, every query head of its group."""
    TILE_M: gl.constexpr = q_desc.block_type.shape[2]
    TILE_N: gl.constexpr = k_desc.block_type.shape[2]
    # causal's first key tiles are seen by the most row blocks: in the grid's order, they start first
    k0 = gl.program_id(0) * TILE_N
    batch, kv_head = gl.program_id(1) // n_kv_heads, gl.program_id(1) % n_kv_heads
    group = n_q_heads // n_kv_heads
    first, whole_first, whole_end, end = _row_blocks(batch, k0, seq, window, prefix, DocStart, CAUSAL, WINDOW,
                                                     PREFIX, DOCUMENTS, TILE_M, TILE_N)

    k_smem = gl.allocate_shared_memory(k_desc.dtype, k_desc.block_type.shape, k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, v_desc.block_type.shape, v_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)

    descs = (q_desc, k_desc, v_desc, do_desc)
    bars = (kv_bar, ring(q_desc, STAGES), ring(do_desc, STAGES))
    bufs = (k_smem, v_smem)
    walk = (batch, kv_head, group, k0, first, end - first, whole_first, whole_end)
    scalars = (Lse, Delta, DK, DV, (stride_b, stride_h, stride_s), n_q_heads, sm_scale, softcap)
    masks = (seq, window, prefix, DocStart, KeyWords)
    # the switches and each consumer's half travel as arguments of their own (gluon_flash says why)
    gl.warp_specialize([
        (_consumer, (descs, bars, bufs, walk, scalars, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI,
                     SELECTION, 0)),
        (_consumer, (descs, bars, bufs, walk, scalars, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI,
                     SELECTION, 1)),
        (_producer, (descs, bars, bufs, walk, scalars, masks, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI)),
    ], [4, 1], [CONSUMER_REGISTERS, PRODUCER_REGISTERS])


def refusal(q, k, v, do, dk, dv):
    """Why this kernel cannot run these (triton_backward_kernels.py's dK/dV kernel does), or None."""
    if k.dim() == 4 and k.shape[0] * k.shape[1] >= 2 ** 16:
        return f"its grid's second axis is batch x key heads, at most 65,535, not {k.shape[0] * k.shape[1]}"
    why = gluon_flash.refusal(q, k, v) or gluon_flash.refusal(do, dk, dv)
    if why:
        return why
    if dk.stride() != dv.stride():
        return "dK and dV are written through one set of strides"
    return None


def launch_dkdv(q, k, v, do, lse, delta, dk, dv, *, causal, window=None, prefix=None, doc_start=None, softcap=None,
                alibi=False, scale=None, lse_shifted=False, selection=None):
    """dK (scaled) and dV into dk and dv (k's shape, any strides alike) from the forward's lse (log2 units;
    under ALiBi shifted by the preprocess, `alibi_key_part`, which lse_shifted says) and the preprocess's delta
    ((B, Hq, S) float32, contiguous) and dO (q's shape). Under ALiBi an lse not said to be shifted is refused
    in one line: the kernel would run and return wrong gradients. selection: DSA's keys' words
    (gluon_selection.key_words), with plain causal attention."""
    selection = checked_words(selection, q, causal=causal, doc_start=doc_start, window=window, prefix=prefix,
                              softcap=softcap, alibi=alibi, keys=True)
    if alibi and not lse_shifted:
        raise ValueError("dK/dV under ALiBi reads the lse shifted by slope (q mod 64) (triton_backward_kernels.py's "
                         "preprocess, ALIBI_ROWS): hand it that, with lse_shifted=True")
    batch, n_q_heads, seq, head_dim = q.shape
    layout = gluon_flash.descriptor_layout(q.dtype)
    q_desc, do_desc = (TensorDescriptor.from_tensor(t, [1, 1, BLOCK_M, head_dim], layout) for t in (q, do))
    k_desc, v_desc = (TensorDescriptor.from_tensor(t, [1, 1, BLOCK_N, head_dim], layout) for t in (k, v))
    doc_arg = doc_start_arg(doc_start, q)
    _dkdv[(seq // BLOCK_N, batch * k.shape[1])](
        q_desc, k_desc, v_desc, do_desc, lse, delta, dk, dv, doc_arg, q if selection is None else selection,
        *dk.stride()[:3], n_q_heads, k.shape[1], seq,
        scale if scale is not None else head_dim ** -0.5, softcap or 1.0, window or 0, prefix or 0,
        CAUSAL=causal, WINDOW=window is not None, PREFIX=prefix is not None, DOCUMENTS=doc_start is not None,
        SOFTCAP=softcap is not None, ALIBI=alibi, SELECTION=selection is not None, STAGES=STAGES,
        CONSUMER_REGISTERS=CONSUMER_REGISTERS, PRODUCER_REGISTERS=PRODUCER_REGISTERS, num_warps=WARPS,
        maxnreg=MAX_REGISTERS)
