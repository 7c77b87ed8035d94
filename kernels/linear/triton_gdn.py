"""Our Gated DeltaNet forward: the chunked WY algorithm of reference/linear_attention.py in three kernels.

1. `_wy_kernel`, every chunk at once: the chunk's cumulative log-decay, A (b_i G_i/G_j k_i.k_j below the
   diagonal), T = (I + A)^-1 by block forward substitution, and W_v = T diag(b) V, W_k = T diag(b G) K.
2. `_state_kernel`, the one sequential part, a program per (sequence, value head, value block) walking
   the chunks: stores the state entering each chunk, the chunk's new values U = W_v - W_k S^T, and
   hands S on: S <- G_C S + U^T diag(G_C / G) K.
3. `_output_kernel`, every chunk at once again: O = diag(G) Q S^T + ((Q K^T) o D o lower) U.

Dots take the inputs' dtype (bfloat16 on the GPU, as flash-linear-attention's do) and accumulate in
float32: T and the state are kept in float32 and cast to that dtype as a dot's operand; decays stay
float32. The states entering each chunk go through memory in the inputs' dtype: the output kernel
casts them to it for its dot anyway, so float32 there only doubled the traffic (2 GiB at 64k tokens).
On the GPU each kernel's warps, stages and value block are autotuned (`_tuned`).

Measured on an H200 at qwen3-next-t16k (session 10, torch.profiler, tools/probe_kernels.py): 3.30 ms a call
with the row-at-a-time inverse below (2.34 ms of it in `_wy_kernel`), 1.41 ms now: `_wy_kernel` 0.569,
`_state_kernel` 0.522, `_output_kernel` 0.317 ms, against fla's 0.344, 0.308 and 0.262 ms for the same
steps (0.946 ms in all). The gate of the change read 3.316 -> 1.415 ms at 16k, 13.59 -> 5.899 at 64k.

The inverse works on the 64 x 64 chunk as 4 x 4 blocks of 16 x 16 (fla's `solve_tril` does the same):
a row-at-a-time substitution on the whole 64 x 64 tile was 63 dependent steps, each two reductions
across the tile, and made `_wy_kernel` the suspect for our 3.45x of fla's time at qwen3-next-t16k
(H200). Now each diagonal block I + A_ii is inverted row by row (15 steps, the four blocks side by
side), and the blocks below the diagonal follow from small dots (see `_wy_kernel`). Compiled offline for
sm_90a (bfloat16, K = V = 128, 4 warps) the loop went from 63 passes of 365 SASS instructions to 15 of
176, and ptxas's spills from 1210 to 76 bytes a thread (255 registers both).
"""

import math

import torch
import triton
import triton.language as tl

CHUNK = 64  # reference/linear_attention.CHUNK
SUB = 16  # the inverse's blocks: 16 rows, tl.dot's smallest tile; CHUNK / SUB = 4 blocks a side


@triton.jit
def _sub_chunk(K, V, G, Beta, Gam, T, H, HV, b, h, hv, t0, out_row, carry,
               KD: tl.constexpr, VD: tl.constexpr, S: tl.constexpr):
    """Tokens t0 .. t0 + S - 1 of a chunk: their keys, write strengths and log G_i from the chunk's start
    (`carry` is log G before t0; stored to Gam at `out_row`), the right-hand sides diag(b) V and
    diag(b G) K in the inputs' dtype, and log G after them."""
    t = t0 + tl.arange(0, S)
    ok = t < T
    kd, vd = tl.arange(0, KD), tl.arange(0, VD)
    g = tl.load(G + (b * T + t) * HV + hv, mask=ok, other=0.0).to(tl.float32)
    gam = carry + tl.cumsum(g, 0)  # padded tokens decay nothing
    beta = tl.load(Beta + (b * T + t) * HV + hv, mask=ok, other=0.0).to(tl.float32)
    k = tl.load(K + ((b * T + t[:, None]) * H + h) * KD + kd[None, :], mask=ok[:, None], other=0.0)
    v = tl.load(V + ((b * T + t[:, None]) * HV + hv) * VD + vd[None, :], mask=ok[:, None], other=0.0)
    tl.store(Gam + out_row + tl.arange(0, S), gam)
    x_v = (beta[:, None] * v.to(tl.float32)).to(k.dtype)
    x_k = ((beta * tl.exp(gam))[:, None] * k.to(tl.float32)).to(k.dtype)
    return k, beta, gam, x_v, x_k, carry + tl.sum(g, 0)


@triton.jit
def _a_block(k_i, beta_i, gam_i, k_j, gam_j, DIAGONAL: tl.constexpr):
    """A's block of rows i, columns j: b_r (G_r / G_s) k_r.k_s, in float32. A block below the diagonal
    is whole (every row's token follows every column's); a diagonal block keeps r > s, and masks the
    exponent before exp (G_r / G_s above the diagonal can overflow to inf, and inf * 0 is NaN)."""
    n = tl.arange(0, k_i.shape[0])
    if DIAGONAL:
        decay = tl.exp(tl.where(n[:, None] > n[None, :], gam_i[:, None] - gam_j[None, :], float("-inf")))
    else:
        decay = tl.exp(gam_i[:, None] - gam_j[None, :])
    return beta_i[:, None] * decay * tl.dot(k_i, tl.trans(k_j))


@triton.jit
def _substitute(a, inverse, r):
    """Row r of (I + a)^-1 from the rows above it, already final: T[r] = e_r - sum_{s<r} a[r, s] T[s]."""
    n = tl.arange(0, a.shape[0])
    a_row = tl.sum(tl.where(n[:, None] == r, a, 0.0), 0)
    return tl.where(n[:, None] == r, inverse - tl.sum(a_row[:, None] * inverse, 0)[None, :], inverse)


@triton.jit
def _exact(x, y):
    """The merge's float32 dot. "ieee", not Hopper's default tf32 (10-bit mantissa, ~5e-4 relative per
    product): T_30 is built from T_10 and T_20, so tf32's rounding would compound through the merge
    (with gates near 1 the blocks below the diagonal are as large as those on it), and T would no
    longer be float32 up to its one cast to the W dots' dtype. The cost is small: the merge is
    16 dots of 16 x 16 x 16, 65k FMAs a chunk, against 983k multiply-adds on tensor cores for A and
    W at K = V = 128. fla's solve_tril defaults to "ieee" too (FLA_TRIL_PRECISION)."""
    return tl.dot(x, y, input_precision="ieee")


@triton.jit
def _w(t, x):
    """One block's share of W = T X: T's block cast to X's dtype (bfloat16 on the GPU), float32 sums."""
    return tl.dot(t.to(x.dtype), x)


@triton.jit
def _store_rows(Out, out_row, x, D: tl.constexpr, S: tl.constexpr):
    rows = out_row + tl.arange(0, S)
    tl.store(Out + rows[:, None] * D + tl.arange(0, D)[None, :], x.to(Out.dtype.element_ty))


@triton.jit
def _wy_kernel(K, V, G, Beta, Gam, Wk, Wv, T, H, HV, ratio,
               KD: tl.constexpr, VD: tl.constexpr, C: tl.constexpr, S: tl.constexpr):
    tl.static_assert(C == 4 * S)  # the blocks below are written out for 4 x 4
    chunk, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)  # offsets pass 2^31 beyond 256k tokens
    b, hv = bh // HV, bh % HV
    h = hv // ratio
    t0 = chunk * C  # the chunk's first token; its rows of Gam, Wk and Wv start at `out`
    out = bh * tl.num_programs(0) * C + t0
    # Each block's operands come from its own 16 rows of k: Triton cannot slice a 64 x 64 register tile.
    k0, beta0, gam0, xv0, xk0, end = _sub_chunk(K, V, G, Beta, Gam, T, H, HV, b, h, hv, t0, out, 0.0, KD, VD, S)
    k1, beta1, gam1, xv1, xk1, end = _sub_chunk(K, V, G, Beta, Gam, T, H, HV, b, h, hv, t0 + S, out + S, end,
                                                KD, VD, S)
    k2, beta2, gam2, xv2, xk2, end = _sub_chunk(K, V, G, Beta, Gam, T, H, HV, b, h, hv, t0 + 2 * S, out + 2 * S,
                                                end, KD, VD, S)
    k3, beta3, gam3, xv3, xk3, end = _sub_chunk(K, V, G, Beta, Gam, T, H, HV, b, h, hv, t0 + 3 * S, out + 3 * S,
                                                end, KD, VD, S)
    a00 = _a_block(k0, beta0, gam0, k0, gam0, True)
    a11 = _a_block(k1, beta1, gam1, k1, gam1, True)
    a22 = _a_block(k2, beta2, gam2, k2, gam2, True)
    a33 = _a_block(k3, beta3, gam3, k3, gam3, True)
    a10 = _a_block(k1, beta1, gam1, k0, gam0, False)
    a21 = _a_block(k2, beta2, gam2, k1, gam1, False)
    a32 = _a_block(k3, beta3, gam3, k2, gam2, False)
    a20 = _a_block(k2, beta2, gam2, k0, gam0, False)
    a31 = _a_block(k3, beta3, gam3, k1, gam1, False)
    a30 = _a_block(k3, beta3, gam3, k0, gam0, False)
    # The diagonal blocks' inverses T_ii = (I + A_ii)^-1, a row at a time: 15 steps on 16 x 16 tiles
    # where the 64 x 64 tile took 63; the four blocks share each step, four independent chains.
    n = tl.arange(0, S)
    t00 = tl.where(n[:, None] == n[None, :], 1.0, 0.0)
    t11, t22, t33 = t00, t00, t00
    for r in range(1, S):
        t00 = _substitute(a00, t00, r)
        t11 = _substitute(a11, t11, r)
        t22 = _substitute(a22, t22, r)
        t33 = _substitute(a33, t33, r)
    # Below the diagonal, block row i of (I + A) T = I reads (I + A_ii) T_ij + sum_{j<=m<i} A_im T_mj = 0,
    # so T_ij = -T_ii sum_{m=j}^{i-1} A_im T_mj, with every T_mj on the right one diagonal nearer.
    t10 = -_exact(t11, _exact(a10, t00))
    t21 = -_exact(t22, _exact(a21, t11))
    t32 = -_exact(t33, _exact(a32, t22))
    t20 = -_exact(t22, _exact(a20, t00) + _exact(a21, t10))
    t31 = -_exact(t33, _exact(a31, t11) + _exact(a32, t21))
    t30 = -_exact(t33, _exact(a30, t00) + _exact(a31, t10) + _exact(a32, t20))
    # W's block row i is sum_{j<=i} T_ij X_j: 10 dots of 16 rows where the 64 x 64 T took one of 64
    # (whose upper 6 blocks were zeros).
    _store_rows(Wv, out, _w(t00, xv0), VD, S)
    _store_rows(Wk, out, _w(t00, xk0), KD, S)
    _store_rows(Wv, out + S, _w(t10, xv0) + _w(t11, xv1), VD, S)
    _store_rows(Wk, out + S, _w(t10, xk0) + _w(t11, xk1), KD, S)
    _store_rows(Wv, out + 2 * S, _w(t20, xv0) + _w(t21, xv1) + _w(t22, xv2), VD, S)
    _store_rows(Wk, out + 2 * S, _w(t20, xk0) + _w(t21, xk1) + _w(t22, xk2), KD, S)
    _store_rows(Wv, out + 3 * S, _w(t30, xv0) + _w(t31, xv1) + _w(t32, xv2) + _w(t33, xv3), VD, S)
    _store_rows(Wk, out + 3 * S, _w(t30, xk0) + _w(t31, xk1) + _w(t32, xk2) + _w(t33, xk3), KD, S)


@triton.jit
def _state_kernel(K, Gam, Wk, Wv, U, States, T, H, HV, ratio, n_chunks, B,
                  KD: tl.constexpr, VD: tl.constexpr, BV: tl.constexpr, C: tl.constexpr):
    bh, v_block = tl.program_id(0).to(tl.int64), tl.program_id(1)
    b, hv = bh // HV, bh % HV
    h = hv // ratio
    i = tl.arange(0, C)
    kd, vd = tl.arange(0, KD), v_block * BV + tl.arange(0, BV)
    state = tl.zeros([BV, KD], dtype=tl.float32)
    for chunk in range(n_chunks):
        t = chunk * C + i
        ok = t < T
        tl.store(States + ((bh * n_chunks + chunk) * VD + vd[:, None]) * KD + kd[None, :],
                 state.to(States.dtype.element_ty))
        row = bh * n_chunks * C + t
        w_k = tl.load(Wk + row[:, None] * KD + kd[None, :])
        w_v = tl.load(Wv + row[:, None] * VD + vd[None, :]).to(tl.float32)
        u = w_v - tl.dot(w_k, tl.trans(state.to(w_k.dtype)))
        tl.store(U + row[:, None] * VD + vd[None, :], u.to(U.dtype.element_ty))
        gam = tl.load(Gam + row)
        gam_end = tl.sum(tl.where(i == C - 1, gam, 0.0), 0)
        k = tl.load(K + ((b * T + t[:, None]) * H + h) * KD + kd[None, :], mask=ok[:, None], other=0.0)
        to_end = (tl.exp(gam_end - gam)[:, None] * k.to(tl.float32)).to(k.dtype)
        state = tl.exp(gam_end) * state + tl.dot(tl.trans(u.to(k.dtype)), to_end)


@triton.jit
def _output_kernel(Q, K, Gam, U, States, Out, T, H, HV, ratio, n_chunks, scale,
                   KD: tl.constexpr, VD: tl.constexpr, BV: tl.constexpr, C: tl.constexpr):
    chunk, bh, v_block = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    b, hv = bh // HV, bh % HV
    h = hv // ratio
    i = tl.arange(0, C)
    t = chunk * C + i
    ok = t < T
    kd, vd = tl.arange(0, KD), v_block * BV + tl.arange(0, BV)
    q = tl.load(Q + ((b * T + t[:, None]) * H + h) * KD + kd[None, :], mask=ok[:, None], other=0.0)
    q = (q.to(tl.float32) * scale).to(q.dtype)
    k = tl.load(K + ((b * T + t[:, None]) * H + h) * KD + kd[None, :], mask=ok[:, None], other=0.0)
    row = bh * n_chunks * C + t
    gam = tl.load(Gam + row)
    state = tl.load(States + ((bh * n_chunks + chunk) * VD + vd[:, None]) * KD + kd[None, :])
    inter = tl.exp(gam)[:, None] * tl.dot(q, tl.trans(state.to(q.dtype)))
    causal = i[:, None] >= i[None, :]
    attend = tl.where(causal, tl.dot(q, tl.trans(k)) * tl.exp(tl.where(causal, gam[:, None] - gam[None, :], 0.0)), 0.0)
    u = tl.load(U + row[:, None] * VD + vd[None, :])
    out = inter + tl.dot(attend.to(u.dtype), u)
    tl.store(Out + ((b * T + t[:, None]) * HV + hv) * VD + vd[None, :], out.to(Out.dtype.element_ty), mask=ok[:, None])


def _tuned(kernel, blocks, key=("T", "HV", "KD", "VD")):
    """The kernel autotuned over warps and stages (and its value block where `blocks` names some): each
    of our kernels rewrites its outputs whole from inputs it does not write, so a config's trial runs
    change nothing."""
    configs = [triton.Config({"BV": bv} if bv else {}, num_warps=w, num_stages=st)
               for bv in blocks or (None,) for w in (4, 8) for st in (1, 2)]
    return triton.autotune(configs=configs, key=key, cache_results=True)(kernel)


_tuned_wy = _tuned(_wy_kernel, ())
# the batch too: the state pass's programs are batch x value heads x value blocks, so its best block
# at batch 1 (qwen3-next-t16k) need not be the block's at batch 4 (prefill-b4-s4k), same T and heads
_tuned_state = _tuned(_state_kernel, (16, 32, 64), key=("T", "HV", "KD", "VD", "B"))
_tuned_output = _tuned(_output_kernel, (32, 64))


def gdn_launcher(q, k, v, g, beta, *, scale, block_v=None):
    """A launch of the chunked forward: `launcher()` returns (B, T, HV, V) in v's dtype. q, k (B, T, H,
    K) contiguous, v (B, T, HV, V), g (B, T, HV) log-decays, beta (B, T, HV); K and V powers of two.
    block_v: rows of V an output program computes. On the GPU, unless given (or V is under 64), the
    value blocks are tuned; otherwise the output's is block_v (default min(V, 64)), the state pass's at
    most 32."""
    batch, tokens, heads, k_dim = q.shape
    v_heads, v_dim = v.shape[2], v.shape[3]
    if v_heads % heads or k_dim & (k_dim - 1) or v_dim & (v_dim - 1):
        raise ValueError(f"value heads {v_heads} must group key heads {heads}; dims {k_dim}, {v_dim} powers of two")
    for x in (q, k, v, g, beta):
        if not x.is_contiguous():
            raise ValueError("q, k, v, g and beta must be contiguous")
    block_v_given, block_v = block_v, block_v or min(v_dim, 64)
    # The state pass is the one sequential loop, a program per (sequence, value head, value block): at 64
    # rows of V a program, qwen3-next at batch 1 (32 value heads, V = 128) is 64 programs for an H200's 132
    # SMs, so its block is narrower than the output kernel's (each of whose programs recomputes Q K^T).
    # On the GPU both are tuned; in the interpreter these widths run, apart, as the tests ask.
    state_block_v = min(block_v, 32)
    n_chunks = math.ceil(tokens / CHUNK)
    rows = batch * v_heads * n_chunks * CHUNK
    gam = torch.empty(rows, device=v.device, dtype=torch.float32)
    w_k = torch.empty(rows, k_dim, device=v.device, dtype=v.dtype)
    w_v = torch.empty(rows, v_dim, device=v.device, dtype=v.dtype)
    u = torch.empty_like(w_v)
    states = torch.empty(batch * v_heads * n_chunks, v_dim, k_dim, device=v.device, dtype=v.dtype)
    ratio = v_heads // heads
    dims = dict(KD=k_dim, VD=v_dim, C=CHUNK)
    if v.is_cuda and block_v_given is None and v_dim >= 64:  # value blocks, warps, stages tuned here
        wy = _tuned_wy[(n_chunks, batch * v_heads)]
        state_pass = _tuned_state[lambda meta: (batch * v_heads, v_dim // meta["BV"])]
        output = _tuned_output[lambda meta: (n_chunks, batch * v_heads, v_dim // meta["BV"])]
        state_block, output_block = {}, {}
    else:
        wy = _wy_kernel[(n_chunks, batch * v_heads)]
        state_pass = _state_kernel[(batch * v_heads, v_dim // state_block_v)]
        output = _output_kernel[(n_chunks, batch * v_heads, v_dim // block_v)]
        state_block, output_block = {"BV": state_block_v}, {"BV": block_v}

    def launcher():
        wy(k, v, g, beta, gam, w_k, w_v, tokens, heads, v_heads, ratio, S=SUB, **dims)
        state_pass(k, gam, w_k, w_v, u, states, tokens, heads, v_heads, ratio, n_chunks, batch, **state_block,
                   **dims)
        out = torch.empty_like(v)
        output(q, k, gam, u, states, out, tokens, heads, v_heads, ratio, n_chunks, scale, **output_block, **dims)
        return out

    return launcher


def prepare_function(variant, problem):
    """Our kernels as a function of any q, k, v, g, beta of the problem's shapes (a block's)."""
    scale = problem.scale

    def attend(q, k, v, g, beta):
        return gdn_launcher(q, k, v, g, beta, scale=scale)()

    attend.backend = "triton"
    return attend


def prepare(variant, problem):
    p = problem
    launcher = gdn_launcher(p.q, p.k, p.v, p.g, p.beta, scale=p.scale)
    launcher()
    return launcher
