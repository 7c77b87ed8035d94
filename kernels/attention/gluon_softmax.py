"""One key tile's scores and online softmax in Gluon, for our Hopper attention kernels (gluon_flash.py's
forward; the backward kernels take the tanh): triton_flash._attend_block's scores, each reaching exp2
through one fused multiply-add with to_log2, and the softcap's exp2 without a running max where the
forward may (`bounded_softcap`)."""

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

from kernels.attention.gluon_selection import selected

LOG2E = gl.constexpr(1.4426950408889634)
# A softcap bounds every score's exp2 argument to +-softcap log2(e). Up to this bound (softcap 55) the
# softmax needs no running max: exp2's offset stays 0, and a tile skips the row max, its shuffles and the
# output's rescale. p then lies in [2^-80, 2^80], which bfloat16 holds (float16 stops at 2^16); the row
# sum stays under S_kv 2^80 and the output's sums under S_kv 2^80 max|v|, inside float32's 2^128 up to
# S_kv 2^20 and |v| 2^27 (ALiBi's bias is unbounded below: with it the max stays). See `_softmax_step`
# for the rounding this asks, and for why a launch filling the lse for a backward keeps the max.
BOUNDED_EXP2 = 80.0


def bounded_softcap(softcap, alibi, dtype, lse):
    """Whether the forward runs exp2 without a running max (BOUNDED_EXP2, `_softmax_step`): a softcap within
    the bound, no ALiBi, bfloat16, and a launch that fills no lse for a backward."""
    return (lse is None and softcap is not None and not alibi and dtype == torch.bfloat16
            and abs(softcap) * LOG2E.value <= BOUNDED_EXP2)


@gluon.jit
def _tanh(x):
    # tanh.approx.f32, one MUFU instruction: triton_flash._tanh's compiled path, whose comment derives
    # its error budget (at most 2^-11 relative, below bfloat16's rounding of the inputs)
    return gl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=gl.float32, is_pure=True,
                                     pack=1)


@gluon.jit
def fold_tanh_scale(q_smem, scale):
    """A consumer's query rows (64 x 128, bfloat16, in shared memory) times the tanh's scale, sm_scale / softcap,
    once an item, so the bounded softcap's scores reach the tanh with no multiply (`_softmax_step`): one
    multiply a score less, of the FMUL, MUFU tanh, FMUL, MUFU exp2 and half a pack each takes (SASS: FMUL
    1248 -> 1056). Measured on an H200 (session 34, do_bench, llama-3-8b-s4k, two probes a side in one lease):
    softcap_50 1.0293, 1.0173 -> 0.9799, 0.9826 ms. The product is rounded to bfloat16, as q itself was: the
    kernel attends with the query bfloat16(q x scale) / scale in place of q, whose rounding moves P by 1.3e-3
    on average (P's own rounding 1.35e-3). Its output's largest error from float64 on q: on the H200 over 8 seeds
    (tools/probe_softcap_fold.py) 1.24x the running-max path's (median; 1.48x at most) and 0.76x the bfloat16
    eager reference's (0.92x at most); tests/test_softcap_rounding.py's model, run offline over 32 seeds, 1.11x
    (1.57x) and 0.70x (1.00x); the suite's check allows 4x the reference's. The GPU test holds the rest of the
    arithmetic to the bounded path's own budget on the folded query. Fenced for the tensor cores, which read it
    next."""
    gl.static_assert(q_smem.dtype == gl.bfloat16, "q x scale leaves float16's normal range for |q| < 0.035")
    blocked: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [gl.num_warps(), 1], [1, 0])
    q = q_smem.load(blocked)
    q_smem.store((q.to(gl.float32) * scale).to(q_smem.dtype))
    fence_async_shared()


@gluon.jit
def alibi_slope(q_head, n_q_heads):
    """ALiBi's slope of head h (0-based) in exp2's units: 2^(-8 (h+1) / H), the paper's geometric
    sequence, times log2 e (the forward's and both backward kernels')."""
    return gl.exp2(-8.0 * (q_head + 1).to(gl.float32) / n_q_heads) * LOG2E


@gluon.jit
def alibi_columns(q_head, n_q_heads, TILE_N: gl.constexpr, layout: gl.constexpr, ALIBI: gl.constexpr,
                  SOFTCAP: gl.constexpr):
    """(slope, bias): ALiBi's slope (`alibi_slope`) and a key tile's bias by column, slope x (0 .. TILE_N-1),
    the same for every tile of the walk. Without a softcap the tensor cores add the column's part to S
    (`alibi_rows`), and bias is 0; what follows of its cost and precision is the softcap's path.

    A score's bias is slope (k - q). `_softmax_step` takes it as this column's part plus the tile's
    `shift`, slope (tile's first key - row0) for the consumer's first row row0, a scalar a tile: the
    part slope (q - row0), the same along a row, the softmax does not see, and `alibi_lse` takes it back.
    Under a softcap a score pays one fused multiply-add for its bias (its capped score plus its column's), where
    slope (k - q) took an integer subtract, a conversion and a fused multiply-add a score: ncu on an H200
    (session 31, llama-3-8b-s4k) counted 3.55e8 warp instructions for alibi against causal's 2.82e8,
    the tensor pipe 65% busy against 77%. The tile's first key less row0 stays an exact integer, and
    converts once a tile (triton_flash says what slope x position less slope x query loses). The column's
    part reaches slope x 127 (183 in exp2's units at the steepest slope, 2^-0.25), so exp2's argument
    carries float32's rounding of that, 2e-5 (a read-only review's float32 model, session 31: 3e-6 with
    the distance a score's), far below P's bfloat16 rounding (3e-3); without a causal mask the per-score
    form lost 4.5e-4 at 4k keys and 1.3e-2 at 128k, this form 2.4e-5 at both."""
    slope = 0.0
    bias = 0.0
    if ALIBI:
        slope = alibi_slope(q_head, n_q_heads)
    if ALIBI and SOFTCAP:
        bias = slope * gl.arange(0, TILE_N, layout=layout).to(gl.float32)
    return slope, bias


ALIBI_K: gl.constexpr = gl.constexpr(16)  # the extra products' depth: one k-step of a 16-bit warpgroup MMA


@gluon.jit
def alibi_keys(dtype: gl.constexpr, TILE_N: gl.constexpr, FILL: gl.constexpr):
    """A (TILE_N, 16) tile in shared memory, key c's row (c, c, c, 0, ...): with `alibi_rows` the B operand
    of one more product into S, which adds slope x c to each score of column c. The same for every tile
    and head (the slope is the rows'), so it is filled once, where FILL (ALiBi without a softcap). Stored
    (keys, 16) and read K-major through a permute, as K is for S. c up to 255 is exact in 16 bits."""
    layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([TILE_N, ALIBI_K], dtype)
    keys = gl.allocate_shared_memory(dtype, [TILE_N, ALIBI_K], layout)
    if FILL:
        blocked: gl.constexpr = gl.BlockedLayout([1, 8], [16, 2], [gl.num_warps(), 1], [1, 0])
        c = gl.arange(0, TILE_N, layout=gl.SliceLayout(1, blocked))[:, None]
        t = gl.arange(0, ALIBI_K, layout=gl.SliceLayout(0, blocked))[None, :]
        keys.store(gl.where(t < 3, c + t * 0, 0).to(dtype))
        fence_async_shared()  # the generic proxy's stores, before the tensor cores' reads
    return keys


@gluon.jit
def alibi_rows(slope, to_log2, dtype: gl.constexpr, HALF_M: gl.constexpr, layout: gl.constexpr,
               ALIBI_MMA: gl.constexpr):
    """The A operand (registers, `layout`) beside `alibi_keys`: each row (hi, mid, lo, 0, ...), the slope in
    q.k's units (slope / to_log2, rounded once) split into three 16-bit parts: bfloat16's hold the float32
    slope exactly (8 bits a part; float16's parts go subnormal on the flattest heads, 2^-21 of it at head dim
    128's scale, a read-only review's model), so the tensor cores' float32 sums give slope x c: each score
    then reaches exp2 through causal's one fused multiply-add, where carrying the bias by column cost an add
    a score (ncu, H200, session 31: 1.35 more instructions a score than causal). The products cost the
    tensor cores one k-step more of S's eight (P V's eight unchanged): 1/16 of their work. 0 where not
    ALIBI_MMA."""
    rows = 0.0
    if ALIBI_MMA:
        blocked: gl.constexpr = gl.BlockedLayout([1, 4], [8, 4], [4, 1], [1, 0])
        rows = gl.convert_layout(_slope_parts(slope, to_log2, dtype, HALF_M, blocked), layout)
    return rows


@gluon.jit
def _slope_parts(slope, to_log2, dtype: gl.constexpr, HALF_M: gl.constexpr, blocked: gl.constexpr):
    """`alibi_rows`' operand in `blocked`: HALF_M rows (hi, mid, lo, 0, ...) of slope / to_log2."""
    b = gl.div_rn(slope, to_log2)
    hi = b.to(dtype).to(gl.float32)
    mid = (b - hi).to(dtype).to(gl.float32)
    lo = b - hi - mid
    t = gl.arange(0, ALIBI_K, layout=gl.SliceLayout(0, blocked))[None, :]
    parts = gl.where(t == 0, hi, gl.where(t == 1, mid, gl.where(t == 2, lo, 0.0)))
    return (parts + gl.zeros([HALF_M, ALIBI_K], gl.float32, layout=blocked)).to(dtype)


@gluon.jit
def alibi_rows_tile(slope, to_log2, dtype: gl.constexpr, HALF_M: gl.constexpr, FILL: gl.constexpr):
    """`alibi_rows`' operand as a (HALF_M, 16) tile in shared memory, filled once where FILL, for a kernel
    whose program keeps one head (gluon_dq.py's): held in registers across dQ's key walk, ptxas 12.8 (Triton
    3.6.0's own, sm_90) gave its registers to dS inside the loop, though the PTX reads them there unchanged, so
    from the second key tile on the bias product read dS (an H200's gradient test: dQ off by up to 4e16); the
    forward, which rebuilds it each work item, keeps them (its SASS: read in the key loop, never written there).
    Filled as `alibi_keys`, by the launch's first warps before the partitions start."""
    layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([HALF_M, ALIBI_K], dtype)
    rows = gl.allocate_shared_memory(dtype, [HALF_M, ALIBI_K], layout)
    if FILL:
        blocked: gl.constexpr = gl.BlockedLayout([1, 8], [16, 2], [gl.num_warps(), 1], [1, 0])
        rows.store(_slope_parts(slope, to_log2, dtype, HALF_M, blocked))
        fence_async_shared()  # the generic proxy's stores, before the tensor cores' reads
    return rows


@gluon.jit
def issue_s(q_smem, k_tile, s_zero, alibi_a, alibi_b, ALIBI_MMA: gl.constexpr):
    """S = Q K^T into a fresh accumulator, asynchronous; under ALIBI_MMA one product more adds ALiBi's bias
    by column (`alibi_rows` or `alibi_rows_tile`, times `alibi_keys`). Each product is its own commit group: a
    wait that leaves only P V in flight has both done."""
    s = warpgroup_mma(q_smem, k_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
    if ALIBI_MMA:
        s = warpgroup_mma(alibi_a, alibi_b.permute((1, 0)), s, is_async=True)
    return s


@gluon.jit
def alibi_lse(lse, slope, offsets, ALIBI: gl.constexpr):
    """The rows' lse (log2 units) with the part of the bias `alibi_columns` leaves out, slope (q - row0)
    for rows row0 + offsets, taken back."""
    if ALIBI:
        lse = lse - slope * offsets.to(gl.float32)
    return lse


@gluon.jit
def visible(scores, lo, hi):
    """Which of a tile's scores (rows x keys, any distributed layout) a row sees: column c (0 .. keys - 1 of the
    tile) where lo <= c <= hi, lo and hi each row's interval less the tile's first key. Against the key
    positions (the tile's first key + c, a column index built from the thread's lane with one logical OR a score)
    ptxas packed the compares into integer masks and unpacked them; against the column alone each score costs
    one compare and one select (SASS, sm_90, Triton 3.6.0: causal's key loop from its P V to the end of the masked
    softmax, between nvdisasm's labels, 546 -> 440 instructions; causal 5112 -> 4912, the window 5984 -> 5528, packed
    documents 6880 -> 6312 in all). Spill moved: the window's 32 bytes and document+window's 16 gone; alibi 0 -> 8
    and packed documents under a softcap 0 -> 24 bytes, outside the key loop; softcap with alibi 24 -> 40, three
    stores and three loads now inside its first consumer's key loop (no catalog variant; not measured). Measured on
    an H200 (session 39, llama-3-8b-s4k): gated same at six forwards, nothing slower (the window 0.986, the documents
    0.987); per useful FLOP the window 1.074 -> 1.055 and the documents 1.189 -> 1.177 (asv, the change and main in
    two calls of one lease). gluon_dq.py keeps the key positions: there this form spilled more (24 -> 32 bytes)."""
    offsets = gl.arange(0, scores.shape[1], layout=gl.SliceLayout(0, scores.type.layout))
    return (offsets[None, :] >= lo[:, None]) & (offsets[None, :] <= hi[:, None])


@gluon.jit
def _softmax_step(qk, m_i, l_i, to_log2, sm_scale, softcap, bias, shift, key, lo, hi, MASKED: gl.constexpr,
                  SOFTCAP: gl.constexpr, ALIBI: gl.constexpr, BOUNDED: gl.constexpr, keep=None):
    """(p, new row max, new row sum, the factor the old ones scale by) of one tile of raw scores q.k:
    triton_flash._attend_block's scores, each reaching exp2 through one fused multiply-add with to_log2.
    Under ALIBI the scores carry the column's bias (from S's extra product, `alibi_rows`; under a softcap
    added here, `alibi_columns`), and the running max is kept with every tile's `shift` added (the row's
    true max plus slope (q - row0), which `alibi_lse` takes back): the shift joins the tile's max and
    leaves exp2's offset, a row's add each.

    BOUNDED (`bounded_softcap`): the max stays 0 and the factor is unused. Without the max a row's largest
    p is rounded to the bfloat16 operand P V reads (with it, it is exactly 1), which biases the output by
    up to 2^-8 (bfloat16 keeps 8 significant bits) along all of its 128 values: so the row must sum what
    P V multiplies, and its sum is the tensor cores' (gluon_flash's consumer multiplies P by a tile of ones
    beside P V): l_i passes through.
    tests/test_softcap_rounding.py models it on the CPU (softcap 50, 8 heads of 512, three seeds): the
    output's largest error from float64 0.0087 where the max gives 0.0081 and the unrounded sum 0.0117. A
    backward's dQ, recomputed from the lse, still feels the rounding through dO.O (modelled: 0.0106 against
    the max's 0.0076), so a launch that fills the lse keeps the max. On an H200 only the unrounded sum ran
    under a backward: the forward+backward GPU test's dQ failed its bound (0.0366 against 0.0304); the
    rounded sum under a backward rests on the CPU model.

    Under MASKED, `keep` (a selection's bits, gluon_selection.selected) hides the scores it does not hold in place
    of the interval test: the bits lie inside the causal interval (gluon_selection.selection_words)."""
    if SOFTCAP:  # under BOUNDED the tanh's scale is in q already (`fold_tanh_scale`)
        s = _tanh(qk) if BOUNDED else _tanh(qk * (sm_scale / softcap))
    else:
        s = qk
    if ALIBI and SOFTCAP:
        s = s * to_log2 + bias[None, :]  # exp2's units, less the tile's shift (without a cap: S holds it)
    if MASKED:
        if keep is None:
            s = gl.where(visible(qk, lo - key, hi - key), s, float("-inf"))
        else:
            s = gl.where(keep, s, float("-inf"))
    gl.static_assert(not (BOUNDED and ALIBI), "ALiBi's bias is unbounded below: the max stays")
    if BOUNDED:
        m_new = m_i  # 0 throughout
        p = gl.exp2(s * to_log2)
        alpha = m_i
        l_new = l_i
    else:
        if ALIBI and SOFTCAP:
            m_new = gl.maximum(m_i, gl.max(s, axis=1) + shift)
        elif ALIBI:
            m_new = gl.maximum(m_i, gl.max(s, axis=1) * to_log2 + shift)
        else:
            m_new = gl.maximum(m_i, gl.max(s, axis=1) * to_log2)
        # a row that sees no key of the tile yet keeps m = -inf; subtracting 0 keeps exp2 at 0, not NaN
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new) if MASKED else m_new
        alpha = gl.exp2(m_i - m_safe)
        if ALIBI and SOFTCAP:
            p = gl.exp2(s - (m_safe - shift)[:, None])
        elif ALIBI:  # causal's one fused multiply-add a score
            p = gl.exp2(s * to_log2 - (m_safe - shift)[:, None])
        else:
            p = gl.exp2(s * to_log2 - m_safe[:, None])
        l_new = l_i * alpha + gl.sum(p, axis=1)
    return p, m_new, l_new, alpha


@gluon.jit
def _softmax(qk, m_i, l_i, to_log2, sm_scale, softcap, bias, shift, key, lo, hi, masked, SOFTCAP: gl.constexpr,
             ALIBI: gl.constexpr, BOUNDED: gl.constexpr, words=0, SELECTION: gl.constexpr = False):
    """_softmax_step, with the interval test on the tiles some row sees only in part (`masked`), or under SELECTION
    a selection's bits (`words`, gluon_selection.load_words) on every tile."""
    if SELECTION:
        p, m_i, l_i, alpha = _softmax_step(qk, m_i, l_i, to_log2, sm_scale, softcap, bias, shift, key, lo, hi,
                                           True, SOFTCAP, ALIBI, BOUNDED, selected(words, qk))
    elif masked:
        p, m_i, l_i, alpha = _softmax_step(qk, m_i, l_i, to_log2, sm_scale, softcap, bias, shift, key, lo, hi,
                                           True, SOFTCAP, ALIBI, BOUNDED)
    else:
        p, m_i, l_i, alpha = _softmax_step(qk, m_i, l_i, to_log2, sm_scale, softcap, bias, shift, key, lo, hi,
                                           False, SOFTCAP, ALIBI, BOUNDED)
    return p, m_i, l_i, alpha


@gluon.jit
def row_sums_zero(HALF_M: gl.constexpr, s_layout: gl.constexpr, BOUNDED: gl.constexpr):
    """A consumer's row sums before its walk: float32 sums `_softmax_step` adds to, or under BOUNDED the
    (rows, 8) accumulator of P times a tile of ones (`issue_pv`), every column the row's sum."""
    if BOUNDED:
        return gl.zeros([HALF_M, 8], gl.float32, layout=gl.NVMMADistributedLayout(
            version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 8, 16]))
    else:
        return gl.zeros([HALF_M], gl.float32, layout=gl.SliceLayout(1, s_layout))


@gluon.jit
def issue_pv(p, v_tile, ones_tile, acc, l_i, BOUNDED: gl.constexpr):
    """P V into acc, asynchronous; under BOUNDED also P times ones_tile ((8, keys), read K-major) into l_i:
    the row sums of p as rounded to P V's operand, on the tensor cores (wgmma n = 8) where a float32 sum
    costs an add a score and the rounding a shift and a mask. Measured on an H200 (session 27, do_bench,
    llama-3-8b-s4k) with the ones product on every launch: softcap_50 1.0375 against 1.0744 ms, but
    causal 0.9783 against 0.9436 and the window 0.5131 against 0.4940 (gate: causal slower 1.030), and the
    lse of the rounded sum strayed 2.4e-3 from our Triton forward's; so only the bounded softcap, which
    fills no lse, takes it."""
    acc = warpgroup_mma(p, v_tile, acc, is_async=True)
    if BOUNDED:
        l_i = warpgroup_mma(p, ones_tile.permute((1, 0)), l_i, is_async=True)
    return acc, l_i


@gluon.jit
def half_diagonal(q_smem, k_tile, v_tile, ones_tile, acc, m_i, l_i, to_log2, sm_scale, softcap, key, lo, hi,
                  o_layout: gl.constexpr, SOFTCAP: gl.constexpr, BOUNDED: gl.constexpr):
    """A document item's diagonal key tile at half its width, the first of its walk (gluon_walk.takes_half_diagonal):
    S, its softmax and P V on the tile's first half of keys (key on), the rest being past every row's position.
    (acc, m_i, l_i) after it, every product done; acc is the walk's zeros, so nothing rescales."""
    HALF_M: gl.constexpr = q_smem.shape[0]
    NARROW: gl.constexpr = k_tile.shape[0] // 2
    n_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, NARROW, 16])
    rows: gl.constexpr = gl.SliceLayout(1, n_layout)
    tile_rows: gl.constexpr = gl.SliceLayout(1, gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                                          instr_shape=[16, 2 * NARROW, 16]))
    # the query rows from registers: with q_smem as the operand ptxas 12.8 computed the query tile's descriptors
    # once, here, and the walk after this branch read them where an item had not taken it (an illegal address on
    # an H200; tools/sass_flow.py finds it offline)
    q = q_smem.load(gl.DotOperandLayout(operand_index=0, parent=n_layout, k_width=2))
    s = warpgroup_mma(q, k_tile.slice(0, NARROW).permute((1, 0)),
                      gl.zeros([HALF_M, NARROW], gl.float32, layout=n_layout), use_acc=False, is_async=True)
    s, q = warpgroup_mma_wait(num_outstanding=0, deps=(s, q))
    sums = l_i if BOUNDED else gl.convert_layout(l_i, rows)
    p, m_i, sums, _ = _softmax_step(s, gl.convert_layout(m_i, rows), sums, to_log2, sm_scale, softcap, 0.0, 0.0,
                                    key, gl.convert_layout(lo, rows), gl.convert_layout(hi, rows), True, SOFTCAP,
                                    False, BOUNDED)
    p = gl.convert_layout(p.to(v_tile.dtype), gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2))
    acc, sums = issue_pv(p, v_tile.slice(0, NARROW), ones_tile.slice(0, NARROW, dim=1), acc, sums, BOUNDED)
    if BOUNDED:  # p too: the operand in flight, whose registers must outlive the products
        acc, sums, p = warpgroup_mma_wait(num_outstanding=0, deps=(acc, sums, p))
    else:
        acc, p = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p))
        sums = gl.convert_layout(sums, tile_rows)
    return acc, gl.convert_layout(m_i, tile_rows), sums
