"""The backward of our attention (triton_attention.py), FlashAttention-2's two-kernel scheme.

The forward keeps each query row's log2-sum-exp2 of its scaled scores (`lse`), so the backward
recomputes every probability P = exp2(S - lse) tile by tile instead of storing P. With dO the output's
gradient and delta = rowsum(dO o O):

    dV = P^T dO,   dP = dO V^T,   dS = P o (dP - delta),   dQ = scale dS K,   dK = scale dS^T Q,

where dS is the gradient of the (capped, biased) score; softcap's tanh adds its derivative 1 - (s / cap)^2
and ALiBi's bias none. `_dkdv_kernel` owns a tile of keys of one KV head and walks every query row of its
group (GQA sums the group's heads into one dK, dV); `_dq_kernel` owns a tile of query rows and walks the
keys they see, as the forward does; on a GPU the two run side by side, on two streams. The masks are the
forward's: one key interval [lo, hi] per query row. On Hopper, where the tensors suit them, gluon_backward.py's
and gluon_dq.py's kernels run the same two halves instead (session 24, H200, gqa_8 at llama-3-8b-s4k: dK/dV
2.224 and dQ 1.440 ms against these kernels' 2.484 and 1.555).

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

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from kernels.attention import triton_attention, triton_flash
from kernels.attention.triton_flash import _bounds, doc_start_arg

try:
    from triton.experimental import gluon  # noqa: F401 - only its absence sends every case to the Triton kernels
except ImportError:  # a Triton without Gluon (a defect in our Gluon modules still raises, below)
    gluon_backward = gluon_dq = None
else:
    from kernels.attention import gluon_backward, gluon_dq

LOG2E = tl.constexpr(1.4426950408889634)  # a plain global is refused by the GPU compiler (the interpreter allows it)


@triton.jit
def _probabilities(qk, lse, q_head, q_pos, keys, lo, hi, n_q_heads, sm_scale, softcap,
                   SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, MASKED: tl.constexpr):
    """(P, the softcap derivative d capped / d raw score or 1) of a tile of raw scores q.k, recomputed
    from the forward's lse, in either orientation: the rows' lse, head, position and interval and the
    keys' positions come shaped to broadcast against qk (rows x keys in dQ's kernel, keys x rows in
    dK/dV's). The score is formed in log2 units (scale and log2(e) in one multiply, as lse is kept);
    MASKED False for a tile every row sees whole, which skips the interval test (four compares and a
    select a score)."""
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
        s = tl.where((keys >= lo) & (keys <= hi), s, float("-inf"))
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
                 n_q_heads, q_len, kv_len, sm_scale, window, prefix, softcap,
                 CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr,
                 SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                 MASKED: tl.constexpr):
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
        # Keys x rows throughout, so P and dS feed their dots as computed (rows x keys would need both
        # transposed in registers); only the loaded q and dO are transposed, as operands.
        pt, slope_t = _probabilities(tl.dot(k, tl.trans(q)), lse[None, :], q_head, q_pos[None, :], offs_n[:, None],
                                     lo[None, :], hi[None, :], n_q_heads, sm_scale, softcap, SOFTCAP, ALIBI, MASKED)
        dv = tl.dot(pt.to(do.dtype), do, dv)
        dst = pt * (tl.dot(v, tl.trans(do)) - delta[None, :]) * slope_t
        dk = tl.dot(dst.to(q.dtype), q, dk)
    return dk, dv


@triton.jit
def _dkdv_kernel(
    desc_q, K, V, desc_do, Lse, Delta, DocStart, DK, DV,
    stride_kb, stride_kh, stride_ks,
    n_kv_heads, n_q_heads, group, q_len, kv_len, sm_scale, window, prefix, softcap,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
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
    # Every head of the group sees the same keys (the masks are of positions): GQA sums the group's
    # heads into one dK, dV. Causal at 4096 queries in blocks of 64: of a tile's 64 - t seeing blocks,
    # only the first has its interval test.
    dk, dv = _dkdv_blocks(dk, dv, k, v, offs_n, see_first, whole_first, kv_head, group, batch, desc_q, desc_do, Lse,
                          Delta, DocStart, n_q_heads, q_len, kv_len, sm_scale, window, prefix, softcap, CAUSAL, WINDOW,
                          PREFIX, DOCUMENTS, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_M, True)
    dk, dv = _dkdv_blocks(dk, dv, k, v, offs_n, whole_first, whole_end, kv_head, group, batch, desc_q, desc_do, Lse,
                          Delta, DocStart, n_q_heads, q_len, kv_len, sm_scale, window, prefix, softcap, CAUSAL, WINDOW,
                          PREFIX, DOCUMENTS, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_M, False)
    dk, dv = _dkdv_blocks(dk, dv, k, v, offs_n, whole_end, see_end, kv_head, group, batch, desc_q, desc_do, Lse, Delta,
                          DocStart, n_q_heads, q_len, kv_len, sm_scale, window, prefix, softcap, CAUSAL, WINDOW,
                          PREFIX, DOCUMENTS, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_M, True)
    tl.store(DK + kv_offs, (dk * sm_scale).to(DK.dtype.element_ty), mask=key_ok[:, None])
    tl.store(DV + kv_offs, dv.to(DV.dtype.element_ty), mask=key_ok[:, None])


@triton.jit
def _dq_tiles(dq, start, end, lse, delta, q_head, q_pos, lo, hi, q, do, desc_k, desc_v, batch, kv_head,
              n_q_heads, kv_len, sm_scale, softcap,
              SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
              MASKED: tl.constexpr):
    """dq plus the key tiles start, start + BLOCK_N, ... below end of one row block."""
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = desc_k.load([batch, kv_head, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = desc_v.load([batch, kv_head, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        p, slope_term = _probabilities(tl.dot(q, tl.trans(k)), lse[:, None], q_head[:, None], q_pos[:, None],
                                       offs_n[None, :], lo[:, None], hi[:, None], n_q_heads, sm_scale, softcap,
                                       SOFTCAP, ALIBI, MASKED)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None]) * slope_term
        dq = tl.dot(ds.to(k.dtype), k, dq)
    return dq


@triton.jit
def _dq_kernel(
    Q, desc_k, desc_v, DO, Lse, Delta, DocStart, DQ,
    stride_qb, stride_qh, stride_qs,
    n_kv_heads, n_q_heads, group, q_len, kv_len, sm_scale, window, prefix, softcap,
    CAUSAL: tl.constexpr, WINDOW: tl.constexpr, PREFIX: tl.constexpr, DOCUMENTS: tl.constexpr,
    SOFTCAP: tl.constexpr, ALIBI: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
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
    dq = _dq_tiles(dq, first, whole_first, lse, delta, q_head, q_pos, lo, hi, q, do, desc_k, desc_v, batch, kv_head,
                   n_q_heads, kv_len, sm_scale, softcap, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_N, True)
    dq = _dq_tiles(dq, whole_first, whole_end, lse, delta, q_head, q_pos, lo, hi, q, do, desc_k, desc_v, batch, kv_head,
                   n_q_heads, kv_len, sm_scale, softcap, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_N, False)
    dq = _dq_tiles(dq, whole_end, end, lse, delta, q_head, q_pos, lo, hi, q, do, desc_k, desc_v, batch, kv_head,
                   n_q_heads, kv_len, sm_scale, softcap, SOFTCAP, ALIBI, HEAD_DIM, BLOCK_N, True)
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


@dataclass(frozen=True)
class Tiles:
    """One backward kernel's launch on a GPU: query rows and keys a tile, warps, pipeline stages."""

    rows: int
    keys: int
    warps: int
    stages: int


# Swept by tools/probe_attention_backward.py on an H200 with the loop tiles through descriptors and one
# loop a mask kind (llama-3-8b-s4k, forward+backward, session 20): dK/dV's 64 x 64, 4 warps, 2 stages
# still won for gqa_8 and softcap_50 (5.154 ms gqa_8; the next, 64 x 128 with 8 warps, 5.293); dQ's 128 x
# 64, 8 warps, 3 stages 5.156 ms against 64 x 64's 5.193 (softcap_50: 6.264 against 6.221, level).
# The interpreter's tile is always BLOCK, which the tests' lengths are set by.
DKDV_TILES = Tiles(64, 64, 4, 2)
DQ_TILES = Tiles(128, 64, 8, 3)
BLOCK = 64  # rows and keys a tile in the interpreter, and rows a preprocess program


def _launch(tiles):
    """A kernel's tile and launch arguments: the GPU's Tiles, or the interpreter's BLOCK (tiles None)."""
    if tiles is None:
        return {"BLOCK_M": BLOCK, "BLOCK_N": BLOCK}
    return {"BLOCK_M": tiles.rows, "BLOCK_N": tiles.keys, "num_warps": tiles.warps, "num_stages": tiles.stages}


def _describable(t):
    """Whether the copy engine can read t: a 16-byte-aligned base and 16-byte multiples for every outer
    stride (a tensor descriptor's terms)."""
    return t.data_ptr() % 16 == 0 and all(stride * t.element_size() % 16 == 0 for stride in t.stride()[:-1])


@functools.cache
def _pooled_side_streams(device):
    """Two streams from torch's pool for dQ's kernel, one pair a GPU (device a torch.device with its index)."""
    return torch.cuda.Stream(device), torch.cuda.Stream(device)


def _side_stream(main):
    """The stream dQ's kernel runs on beside `main`, never main itself: torch hands its 32 pooled streams
    out in turn, so a caller may be running on one cached here, and the two kernels would then run one
    after the other (right, but without the overlap). Of two consecutive pooled streams at most one is
    main, and a caller's stream always gets the same one."""
    first, second = _pooled_side_streams(main.device)
    return first if first != main else second


class TritonAttention(torch.autograd.Function):
    """Our forward (with lse) and the two backward kernels, for q (B, Hq, Sq, D), k, v (B, Hkv, Skv, D);
    `items`, the forward's document work listed once (triton_attention.document_work), or None."""

    @staticmethod
    def forward(ctx, q, k, v, options, items=None):
        lse = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
        out = triton_attention.forward_launcher(q, k, v, lse=lse, items=items, **options)()
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.options = options
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        if q.numel() == 0:  # no query: nothing flows back (and a descriptor needs a row)
            return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None, None
        # The kernels read Q and DO and write DQ with q's strides, K, V, DK and DV with k's. A gradient
        # is allocated like its input: in the input's layout where that is dense (a block's projections
        # are transposed views), contiguous where not (a slice of a fused QKV projection), and the input
        # then goes into it. The forward's output was allocated like q, so it has DQ's layout, which the
        # preprocess writes DO in (a DO read with other strides than its own put dq off by 10).
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        if q.stride() != dq.stride() or not _describable(q):
            # a fresh copy: contiguous() would hand back a contiguous q at a misaligned offset as it is
            q = q.clone(memory_format=torch.contiguous_format)
            dq = torch.empty_like(q)
            # The preprocess writes dO in out's strides, which dQ's kernel reads as q's. A fresh copy, as
            # q's: contiguous() keeps the stride of a size-1 dimension, which torch ignores and a
            # descriptor does not (a batch of 1 with an odd batch stride).
            out = out.clone(memory_format=torch.contiguous_format)
        if v.stride() != k.stride() or dk.stride() != k.stride():  # the forward refused k, v misaligned
            k, v = k.contiguous(), v.contiguous()
            dk = torch.empty_like(k)
        dv = torch.empty_like(v)
        opts = ctx.options
        batch, n_q_heads, q_len, head_dim = q.shape
        n_kv_heads, kv_len = k.shape[1], k.shape[2]
        # The preprocess reads dO with its own strides but a contiguous head dim, in the output's dtype
        # (delta from the values the kernels read): a loss of out.sum() hands an expanded dO (every
        # stride 0), a transposed output one whose head dim is strided.
        if grad_out.stride(-1) != 1 or grad_out.dtype != out.dtype:
            grad_out = grad_out.to(out.dtype).contiguous()
        do = torch.empty_like(out)
        delta = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
        hopper_dkdv = gluon_backward and not gluon_backward.refusal(q, k, v, do, dk, dv)  # gluon_backward.py
        shifted = torch.empty_like(lse) if hopper_dkdv and opts.get("alibi") else None  # its ALiBi's lse, shifted
        _preprocess_kernel[(triton.cdiv(q_len, BLOCK), batch * n_q_heads)](
            out, grad_out, do, delta, lse, shifted if shifted is not None else lse, *out.stride()[:3],
            *grad_out.stride()[:3], n_q_heads, q_len, HEAD_DIM=head_dim, BLOCK=BLOCK,
            ALIBI_ROWS=gluon_backward.BLOCK_M if shifted is not None else 0)
        doc_start = opts.get("doc_start")
        doc_arg = doc_start_arg(doc_start, q)
        scale = opts.get("scale") or head_dim ** -0.5
        common = (n_kv_heads, n_q_heads, n_q_heads // n_kv_heads, q_len, kv_len, scale, opts.get("window") or 0,
                  opts.get("prefix") or 0, opts.get("softcap") or 1.0)
        flags = dict(CAUSAL=opts["causal"], WINDOW=opts.get("window") is not None,
                     PREFIX=opts.get("prefix") is not None, DOCUMENTS=doc_start is not None,
                     SOFTCAP=opts.get("softcap") is not None, ALIBI=bool(opts.get("alibi")), HEAD_DIM=head_dim)
        dkdv, dq_tiles = (DKDV_TILES, DQ_TILES) if q.is_cuda else (None, None)
        row_tile = [1, 1, dkdv.rows if dkdv else BLOCK, head_dim]
        key_tile = [1, 1, dq_tiles.keys if dq_tiles else BLOCK, head_dim]
        # On a GPU dQ's kernel runs on a stream of its own beside dK/dV's: the two read the same inputs and
        # write apart, and causal's programs differ up to 64x in length at 4096 queries (one row block of 64
        # sees the last key tile, all 64 the first), so either kernel's last wave leaves SMs idle that the
        # other's programs can fill. Everything dQ's kernel touches stays alive until backward returns,
        # and the main stream waits for the side stream before that (before any free): no record_stream,
        # which a CUDA graph's capture would not keep.
        main = torch.cuda.current_stream(q.device) if q.is_cuda else None
        side = _side_stream(main) if main is not None else None  # None on the CPU: one stream, no fork
        if side is not None:  # fork after the preprocess, whose delta and dO both kernels read
            side.wait_stream(main)
        if hopper_dkdv:
            gluon_backward.launch_dkdv(q, k, v, do, lse if shifted is None else shifted, delta, dk, dv,
                                       lse_shifted=shifted is not None, **opts)
        else:
            _dkdv_kernel[(triton.cdiv(kv_len, dkdv.keys if dkdv else BLOCK), batch * n_kv_heads)](
                TensorDescriptor.from_tensor(q, row_tile), k, v, TensorDescriptor.from_tensor(do, row_tile), lse, delta,
                doc_arg, dk, dv, *k.stride()[:3], *common, **flags, **_launch(dkdv))
        with torch.cuda.stream(side):
            if gluon_dq and not gluon_dq.refusal(q, k, v, do, dq):  # Hopper's (gluon_dq.py)
                gluon_dq.launch_dq(q, k, v, do, lse, delta, dq, **opts)
            else:
                _dq_kernel[(triton.cdiv(q_len * n_q_heads // n_kv_heads, dq_tiles.rows if dq_tiles else BLOCK),
                            batch * n_kv_heads)](
                    q, TensorDescriptor.from_tensor(k, key_tile), TensorDescriptor.from_tensor(v, key_tile), do, lse,
                    delta, doc_arg, dq, *q.stride()[:3], *common, **flags, **_launch(dq_tiles))
        if side is not None:
            main.wait_stream(side)
        return dq, dk, dv, None, None
