"""The Triton kernels of our attention's backward (triton_attention_backward.py runs them), FlashAttention-2's
two-kernel scheme.

The forward keeps each query row's log2-sum-exp2 of its scaled scores (`lse`), so the backward
recomputes every probability P = exp2(S - lse) tile by tile instead of storing P. With dO the output's
gradient and delta = rowsum(dO o O):

    dV = P^T dO,   dP = dO V^T,   dS = P o (dP - delta),   dQ = scale dS K,   dK = scale dS^T Q,

where dS is the gradient of the (capped, biased) score; softcap's tanh adds its derivative 1 - (s / cap)^2
and ALiBi's bias none. `_dkdv_kernel` owns a tile of keys of one KV head and walks every query row of its
group (GQA sums the group's heads into one dK, dV); `_dq_kernel` owns a tile of query rows and walks the
keys they see, as the forward does. The masks are the forward's: one key interval [lo, hi] per query row,
and under SELECTION (DSA's token selection, a byte a key, as triton_flash.py's forward reads it) the
selection's bytes besides, on every tile.

Why two kernels and not one: FlashAttention-2's and -3's one kernel adds each step's dQ share, dS K, to
a float32 sum in global memory, five matmuls a step against the two kernels' seven. Under Triton 3.6.0
it lost on an H200: at 64 rows x 128 keys, eight warps, 255 registers and 248 bytes spilled, forward+
backward at llama-3-8b-s4k took 6.293 ms against the two kernels' 5.260 (its kernel 4.900 ms against
their 2.482 + 1.415; element atomics 6.845; session 22's bwd-atomic, do_bench).

The tiles each loop walks (q and dO in dK/dV's, K and V in dQ's) come through tensor descriptors, as the
forward's K and V: a 64 x 128 tile through pointers costs each of 128 threads 8 64-bit addresses a tensor, and
dK/dV's kernel, whose two float32 accumulators alone take 128 registers a thread, sat at 255 registers with 232
bytes spilled that way (Triton 3.6.0, sm_90, ptxas's count). Rows and keys past a head's end read as zeros and
are masked like invisible ones. The tiles a program loads once (its own keys, its own rows) stay pointer loads.
"""

import triton
import triton.language as tl

from kernels.attention import triton_flash
from kernels.attention.triton_flash import _bounds

LOG2E = tl.constexpr(1.4426950408889634)  # a plain global is refused by the GPU compiler (the interpreter allows it)


@triton.jit
def _probabilities(qk, lse, q_head, q_pos, keys, lo, hi, n_q_heads, sm_scale, softcap, selected,
                   SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, MASKED: tl.constexpr, SELECTION: tl.constexpr):
    """(P, the softcap derivative d capped / d raw score or 1) of a tile of raw scores q.k, recomputed
    from the forward's lse, in either orientation: the rows' lse, head, position and interval and the
    keys' positions come shaped to broadcast against qk (rows x keys in dQ's kernel, keys x rows in
    dK/dV's). The score is formed in log2 units (scale and log2(e) in one multiply, as lse is kept);
    MASKED False for a tile every row sees whole, which skips the interval test (four compares and a
    select a score). Under SELECTION (DSA's, a byte a key: triton_flash's forward) `selected` is the tile's
    bytes, shaped as qk, and every tile is MASKED."""
    s = qk * (sm_scale * LOG2E)
    slope_term = 1.0
    if SOFTCAP:
        # d (c tanh(s / c)) / ds = 1 - tanh^2: from the tanh itself, with no division per score
        t = triton_flash._tanh(s * (1.0 / (softcap * LOG2E)))
        slope_term = 1.0 - t * t
        s = (softcap * LOG2E) * t
    if ALIBI:
        slope = tl.exp2(-8.0 * (q_head + 1).to(tl.float32) / n_q_heads) * LOG2E
        s = s + slope * (keys - q_pos).to(tl.float32)
    if MASKED:
        visible = (keys >= lo) & (keys <= hi)
        if SELECTION:
            visible = visible & (selected != 0)
        s = tl.where(visible, s, float("-inf"))
    p = tl.exp2(s - lse)
    return p, slope_term


@triton.jit
def _query_rows(rows, batch, kv_head, Q, DO, Lse, Delta, DocStart, stride_qb, stride_qh, stride_qs,
                n_q_heads, group, q_len, kv_len, window, prefix,
                CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr,
                HEAD_DIM: tl.constexpr):
    """A tile of one KV head's query rows (row = head in the group x q_len + query, as the forward):
    (row valid, head, position, key interval lo..hi, q, dO, lse, delta, the rows' offsets)."""
    n_rows = group * q_len
    row_ok = rows < n_rows
    rows_c = tl.minimum(rows, n_rows - 1)  # tail rows borrow the last row's, never stored
    q_head = kv_head * group + rows_c // q_len
    q_row = rows_c % q_len
    q_pos = kv_len - q_len + q_row
    lo, hi = _bounds(q_pos, batch, kv_len, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX, DOCUMENTS)
    d = tl.arange(0, HEAD_DIM)
    q_offs = batch * stride_qb + q_head[:, None] * stride_qh + q_row[:, None] * stride_qs + d[None, :]
    stat = (batch * n_q_heads + q_head) * q_len + q_row
    return (row_ok, q_head, q_pos, lo, hi, tl.load(Q + q_offs), tl.load(DO + q_offs), tl.load(Lse + stat),
            tl.load(Delta + stat), q_offs)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, offs_n, first, end, kv_head, group, batch, desc_q, desc_do, Lse, Delta, DocStart,
                 Selected, width, n_q_heads, q_len, kv_len, sm_scale, window, prefix, softcap,
                 CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr,
                 SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                 MASKED: tl.constexpr, SELECTION: tl.constexpr):
    """dk, dv plus row blocks first..end - 1 of every query head of the group against this program's
    key tile: one loop of loads and dots alone over (head, block), which the GPU compiler pipelines (a
    branch a block in the loop kept q and dO's loads from being issued ahead; a loop a head drained the
    pipeline four times as often)."""
    blocks = end - first
    for step in range(0, group * blocks):
        q_head = kv_head * group + step // blocks
        block = first + step % blocks
        q_row = block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = q_row < q_len
        q_row = tl.minimum(q_row, q_len - 1)  # tail rows borrow the last row's and see no key
        q_pos = kv_len - q_len + q_row
        lo, hi = _bounds(q_pos, batch, kv_len, window, prefix, DocStart, CAUSAL, WINDOW, PREFIX, DOCUMENTS)
        hi = tl.where(row_ok, hi, -1)
        q = desc_q.load([batch, q_head, block * BLOCK_M, 0]).reshape(BLOCK_M, HEAD_DIM)
        do = desc_do.load([batch, q_head, block * BLOCK_M, 0]).reshape(BLOCK_M, HEAD_DIM)
        stat = (batch * n_q_heads + q_head) * q_len + q_row
        lse, delta = tl.load(Lse + stat), tl.load(Delta + stat)
        selected = 0
        if SELECTION:  # the rows' bytes of this key tile, keys x rows (rows padded to `width` keys)
            selected = tl.load(Selected + (batch * q_len + q_row)[None, :].to(tl.int64) * width + offs_n[:, None])
        # Keys x rows throughout, so P and dS feed their dots as computed (rows x keys would need both
        # transposed in registers); only the loaded q and dO are transposed, as operands.
        pt, slope_t = _probabilities(tl.dot(k, tl.trans(q)), lse[None, :], q_head, q_pos[None, :], offs_n[:, None],
                                     lo[None, :], hi[None, :], n_q_heads, sm_scale, softcap, selected, SOFTCAP, ALIBI,
                                     MASKED, SELECTION)
        dv = tl.dot(pt.to(do.dtype), do, dv)
        dst = pt * (tl.dot(v, tl.trans(do)) - delta[None, :]) * slope_t
        dk = tl.dot(dst.to(q.dtype), q, dk)
    return dk, dv


@triton.jit
def _dkdv_kernel(
    desc_q, K, V, desc_do, Lse, Delta, DocStart, DK, DV, Selected, width,
    stride_kb, stride_kh, stride_ks,
    n_kv_heads, n_q_heads, group, q_len, kv_len, sm_scale, window, prefix, softcap,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, SELECTION: tl.constexpr = False,
):
    key_block = tl.program_id(0)
    batch, kv_head = tl.program_id(1) // n_kv_heads, tl.program_id(1) % n_kv_heads
    offs_n = key_block * BLOCK_N + tl.arange(0, BLOCK_N)
    key_ok = offs_n < kv_len
    d = tl.arange(0, HEAD_DIM)
    kv_offs = batch * stride_kb + kv_head * stride_kh + offs_n[:, None] * stride_ks + d[None, :]
    k = tl.load(K + kv_offs, mask=key_ok[:, None], other=0.0)
    v = tl.load(V + kv_offs, mask=key_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    first_key, last_key = key_block * BLOCK_N, tl.minimum(key_block * BLOCK_N + BLOCK_N, kv_len) - 1
    whole_keys = key_block * BLOCK_N + BLOCK_N <= kv_len
    # Which row blocks see this key tile, and which see all of it, from the rows' key intervals alone
    # (no load of q or dO). Every mask here gives each query an interval whose ends never decrease with
    # the query's position (causal, a window, a document's start, a prefix), so both sets are runs of
    # blocks, the whole ones inside the seeing ones. Walking every row block instead did causal's
    # masked half (and a window's or a document's more) in full: 2.2x SDPA's forward+backward on an
    # H200 (gqa_8 at llama-3-8b-s4k, 8.958 against 4.079 ms, session 11).
    n_blocks = tl.cdiv(q_len, BLOCK_M)
    see_first, see_end, whole_first, whole_end = n_blocks, 0, n_blocks, 0
    for block in range(0, n_blocks):
        q_row = block * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = q_row < q_len
        lo, hi = _bounds(kv_len - q_len + tl.minimum(q_row, q_len - 1), batch, kv_len, window, prefix, DocStart,
                         CAUSAL, WINDOW, PREFIX, DOCUMENTS)
        sees = (tl.max(tl.where(row_ok, hi, -1), 0) >= first_key) & \
            (tl.min(tl.where(row_ok, lo, kv_len), 0) <= last_key)
        whole = whole_keys & (block * BLOCK_M + BLOCK_M <= q_len) & (tl.max(lo, 0) <= first_key) & \
            (tl.min(hi, 0) >= last_key)
        see_first = tl.where(sees, tl.minimum(see_first, block), see_first)
        see_end = tl.where(sees, block + 1, see_end)
        whole_first = tl.where(whole, tl.minimum(whole_first, block), whole_first)
        whole_end = tl.where(whole, block + 1, whole_end)
    see_first = tl.minimum(see_first, see_end)  # none sees: every loop below is empty
    none_whole = whole_end <= whole_first
    whole_first = tl.where(none_whole, see_end, whole_first)
    whole_end = tl.where(none_whole, see_end, whole_end)
    if SELECTION:  # a selection masks every tile
        whole_first = see_end
        whole_end = see_end
    # Every head of the group sees the same keys (the masks are of positions): GQA sums the group's
    # heads into one dK, dV. Causal at 4096 queries in blocks of 64: of a tile's 64 - t seeing blocks,
    # only the first has its interval test.
    dk, dv = _dkdv_blocks(dk, dv, k, v, offs_n, see_first, whole_first, kv_head, group, batch, desc_q, desc_do, Lse,
                          Delta, DocStart, Selected, width, n_q_heads, q_len, kv_len, sm_scale, window, prefix,
                          softcap, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_M, True,
                          SELECTION)
    dk, dv = _dkdv_blocks(dk, dv, k, v, offs_n, whole_first, whole_end, kv_head, group, batch, desc_q, desc_do, Lse,
                          Delta, DocStart, Selected, width, n_q_heads, q_len, kv_len, sm_scale, window, prefix,
                          softcap, CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_M, False,
                          SELECTION)
    dk, dv = _dkdv_blocks(dk, dv, k, v, offs_n, whole_end, see_end, kv_head, group, batch, desc_q, desc_do, Lse, Delta,
                          DocStart, Selected, width, n_q_heads, q_len, kv_len, sm_scale, window, prefix, softcap,
                          CAUSAL, WINDOW, PREFIX, DOCUMENTS, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_M, True, SELECTION)
    tl.store(DK + kv_offs, (dk * sm_scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + kv_offs, dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


@triton.jit
def _dq_tiles(dq, start, end, lse, delta, q_head, q_pos, lo, hi, q, do, desc_k, desc_v, batch, kv_head,
              selected_rows, n_q_heads, kv_len, sm_scale, softcap,
              SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
              MASKED: tl.constexpr, SELECTION: tl.constexpr):
    """dq plus the key tiles start, start + BLOCK_N, ... below end of one row block (under SELECTION,
    selected_rows points at each row's bytes)."""
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = desc_k.load([batch, kv_head, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([batch, kv_head, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        selected = 0
        if SELECTION:
            selected = tl.load(selected_rows[:, None] + offs_n[None, :])
        p, slope_term = _probabilities(tl.dot(q, tl.trans(k)), lse[:, None], q_head[:, None], q_pos[:, None],
                                       offs_n[None, :], lo[:, None], hi[:, None], n_q_heads, sm_scale, softcap,
                                       selected, SOFTCAP, ALIBI, MASKED, SELECTION)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None]) * slope_term
        dq = tl.dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit
def _dq_kernel(
    Q, desc_k, desc_v, DO, Lse, Delta, DocStart, DQ, Selected, width,
    stride_qb, stride_qh, stride_qs,
    n_kv_heads, n_q_heads, group, q_len, kv_len, sm_scale, window, prefix, softcap,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, SELECTION: tl.constexpr = False,
):
    row_block = tl.program_id(0)
    batch, kv_head = tl.program_id(1) // n_kv_heads, tl.program_id(1) % n_kv_heads
    row_ok, q_head, q_pos, lo, hi, q, do, lse, delta, q_offs = _query_rows(
        row_block * BLOCK_M + tl.arange(0, BLOCK_M), batch, kv_head, Q, DO, Lse, Delta, DocStart, stride_qb,
        stride_qh, stride_qs, n_q_heads, group, q_len, kv_len, window, prefix, CAUSAL, WINDOW, PREFIX, DOCUMENTS,
        HEAD_DIM)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    first = (tl.min(lo, 0) // BLOCK_N) * BLOCK_N
    end = tl.minimum(tl.max(hi, 0) + 1, kv_len)
    last = tl.cdiv(end, BLOCK_N) * BLOCK_N
    # Tiles every real row sees whole (tail rows, never stored, may see less) lie between the rows'
    # largest lo and smallest hi: three loops, masked / whole / masked, rather than a branch per tile,
    # which Triton 3.6's software pipeliner fails to compile on sm_90 ("PassManager::run failed").
    lo_max = tl.max(tl.where(row_ok, lo, -1), 0)
    hi_min = tl.min(tl.where(row_ok, hi, kv_len), 0)
    whole_first = tl.minimum(tl.maximum(tl.cdiv(lo_max, BLOCK_N) * BLOCK_N, first), last)
    whole_end = tl.maximum(tl.minimum((tl.minimum(hi_min + 1, kv_len) // BLOCK_N) * BLOCK_N, last), whole_first)
    selected_rows = Selected
    if SELECTION:  # a selection masks every tile: the first loop walks them all, each row's bytes
        whole_first = last
        whole_end = last
        selected_rows = Selected + (batch * q_len + q_pos - (kv_len - q_len)).to(tl.int64) * width
    dq = _dq_tiles(dq, first, whole_first, lse, delta, q_head, q_pos, lo, hi, q, do, desc_k, desc_v, batch, kv_head,
                   selected_rows, n_q_heads, kv_len, sm_scale, softcap, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_N, True,
                   SELECTION)
    dq = _dq_tiles(dq, whole_first, whole_end, lse, delta, q_head, q_pos, lo, hi, q, do, desc_k, desc_v, batch, kv_head,
                   selected_rows, n_q_heads, kv_len, sm_scale, softcap, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_N, False,
                   SELECTION)
    dq = _dq_tiles(dq, whole_end, end, lse, delta, q_head, q_pos, lo, hi, q, do, desc_k, desc_v, batch, kv_head,
                   selected_rows, n_q_heads, kv_len, sm_scale, softcap, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_N, True,
                   SELECTION)
    tl.store(DQ + q_offs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _preprocess_kernel(O, DO_in, DO, Delta, Lse, ShiftedLse, stride_ob, stride_oh, stride_os, stride_gb, stride_gh,
                       stride_gs, n_heads, seq, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr,
                       ALIBI_ROWS: tl.constexpr):
    """delta = rowsum(dO o O) in float32, and dO copied into the output's layout, in one pass: in torch
    the copy, two float32 casts, their product and its sum were five passes over (B, Hq, S, D), about
    2.1 GB moved at llama-3-8b-s4k, where dO and O are 134 MB each. Where ALIBI_ROWS (not 0), also
    ShiftedLse = lse + slope (q mod ALIBI_ROWS), the part of ALiBi's bias Hopper's dK/dV takes from the
    lse (gluon_backward.alibi_key_part)."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    batch, head = tl.program_id(1) // n_heads, tl.program_id(1) % n_heads
    d = tl.arange(0, HEAD_DIM)
    ok = rows[:, None] < seq
    at = batch * stride_ob + head * stride_oh + rows[:, None] * stride_os + d[None, :]
    o = tl.load(O + at, mask=ok, other=0.0)
    do = tl.load(DO_in + batch * stride_gb + head * stride_gh + rows[:, None] * stride_gs + d[None, :], mask=ok,
                 other=0.0)
    tl.store(DO + at, do, mask=ok)
    tl.store(Delta + tl.program_id(1) * seq + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=rows < seq)
    if ALIBI_ROWS:
        slope = tl.exp2(-8.0 * (head + 1).to(tl.float32) / n_heads) * LOG2E  # gluon_softmax.alibi_slope's
        at = tl.program_id(1) * seq + rows
        lse = tl.load(Lse + at, mask=rows < seq)
        tl.store(ShiftedLse + at, lse + slope * (rows % ALIBI_ROWS).to(tl.float32), mask=rows < seq)
