"""Our Gated DeltaNet forward: the chunked WY algorithm of reference/linear_attention.py in three kernels.

1. `_wy_kernel`, every chunk at once: the chunk's cumulative log-decay, A (b_i G_i/G_j k_i.k_j below the
   diagonal), T = (I + A)^-1 by forward substitution, and W_v = T diag(b) V, W_k = T diag(b G) K.
2. `_state_kernel`, the one sequential part, a program per (sequence, value head, value block) walking
   the chunks: stores the state entering each chunk, the chunk's new values U = W_v - W_k S^T, and
   hands S on: S <- G_C S + U^T diag(G_C / G) K.
3. `_output_kernel`, every chunk at once again: O = diag(G) Q S^T + ((Q K^T) o D o lower) U.

Dots take the inputs' dtype (bfloat16 on the GPU, as flash-linear-attention's do) and accumulate in
float32: T and the state are kept in float32 and cast to that dtype as a dot's operand; decays stay
float32. The states entering each chunk go through memory in float32 (2 GiB at 64k tokens: bfloat16
would halve that traffic). The forward substitution runs row by row on a 64 x 64 tile: simple, and
the first thing to make faster (fla inverts 16 x 16 blocks and merges them).
"""

import math

import torch
import triton
import triton.language as tl

CHUNK = 64  # reference/linear_attention.CHUNK


@triton.jit
def _wy_kernel(K, V, G, Beta, Gam, Wk, Wv, T, H, HV, ratio,
               KD: tl.constexpr, VD: tl.constexpr, C: tl.constexpr):
    chunk, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)  # offsets pass 2^31 beyond 256k tokens
    b, hv = bh // HV, bh % HV
    h = hv // ratio
    i = tl.arange(0, C)
    t = chunk * C + i
    ok = t < T
    kd, vd = tl.arange(0, KD), tl.arange(0, VD)
    g = tl.load(G + (b * T + t) * HV + hv, mask=ok, other=0.0).to(tl.float32)
    gam = tl.cumsum(g, 0)  # log G_i from the chunk's start; padded tokens decay nothing
    beta = tl.load(Beta + (b * T + t) * HV + hv, mask=ok, other=0.0).to(tl.float32)
    k = tl.load(K + ((b * T + t[:, None]) * H + h) * KD + kd[None, :], mask=ok[:, None], other=0.0)
    v = tl.load(V + ((b * T + t[:, None]) * HV + hv) * VD + vd[None, :], mask=ok[:, None], other=0.0)
    lower = i[:, None] > i[None, :]
    decay = tl.exp(tl.where(lower, gam[:, None] - gam[None, :], float("-inf")))
    a = beta[:, None] * decay * tl.dot(k, tl.trans(k))
    # T = (I + A)^-1, a row at a time: T[r] = e_r - sum_{j<r} A[r, j] T[j] (rows above r are final)
    inverse = tl.where(i[:, None] == i[None, :], 1.0, 0.0)
    for r in range(1, C):
        a_row = tl.sum(tl.where(i[:, None] == r, a, 0.0), 0)
        inverse = tl.where(i[:, None] == r, inverse - tl.sum(a_row[:, None] * inverse, 0)[None, :], inverse)
    inverse = inverse.to(k.dtype)
    w_v = tl.dot(inverse, (beta[:, None] * v.to(tl.float32)).to(k.dtype))
    w_k = tl.dot(inverse, ((beta * tl.exp(gam))[:, None] * k.to(tl.float32)).to(k.dtype))
    row = bh * tl.num_programs(0) * C + t
    tl.store(Gam + row, gam)
    tl.store(Wv + row[:, None] * VD + vd[None, :], w_v.to(Wv.dtype.element_ty))
    tl.store(Wk + row[:, None] * KD + kd[None, :], w_k.to(Wk.dtype.element_ty))


@triton.jit
def _state_kernel(K, Gam, Wk, Wv, U, States, T, H, HV, ratio, n_chunks,
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
        tl.store(States + ((bh * n_chunks + chunk) * VD + vd[:, None]) * KD + kd[None, :], state)
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


def gdn_launcher(q, k, v, g, beta, *, scale, block_v=None):
    """A launch of the chunked forward: `launcher()` returns (B, T, HV, V) in v's dtype. q, k (B, T, H,
    K) contiguous, v (B, T, HV, V), g (B, T, HV) log-decays, beta (B, T, HV); K and V powers of two."""
    batch, tokens, heads, k_dim = q.shape
    v_heads, v_dim = v.shape[2], v.shape[3]
    if v_heads % heads or k_dim & (k_dim - 1) or v_dim & (v_dim - 1):
        raise ValueError(f"value heads {v_heads} must group key heads {heads}; dims {k_dim}, {v_dim} powers of two")
    for x in (q, k, v, g, beta):
        if not x.is_contiguous():
            raise ValueError("q, k, v, g and beta must be contiguous")
    block_v = block_v or min(v_dim, 64)
    n_chunks = math.ceil(tokens / CHUNK)
    rows = batch * v_heads * n_chunks * CHUNK
    gam = torch.empty(rows, device=v.device, dtype=torch.float32)
    w_k = torch.empty(rows, k_dim, device=v.device, dtype=v.dtype)
    w_v = torch.empty(rows, v_dim, device=v.device, dtype=v.dtype)
    u = torch.empty_like(w_v)
    states = torch.empty(batch * v_heads * n_chunks, v_dim, k_dim, device=v.device, dtype=torch.float32)
    ratio = v_heads // heads
    dims = dict(KD=k_dim, VD=v_dim, C=CHUNK)
    launch = {"num_warps": 4} if v.is_cuda else {}
    wy = _wy_kernel[(n_chunks, batch * v_heads)]
    state_pass = _state_kernel[(batch * v_heads, v_dim // block_v)]
    output = _output_kernel[(n_chunks, batch * v_heads, v_dim // block_v)]

    def launcher():
        wy(k, v, g, beta, gam, w_k, w_v, tokens, heads, v_heads, ratio, **dims, **launch)
        state_pass(k, gam, w_k, w_v, u, states, tokens, heads, v_heads, ratio, n_chunks, BV=block_v, **dims, **launch)
        out = torch.empty_like(v)
        output(q, k, gam, u, states, out, tokens, heads, v_heads, ratio, n_chunks, scale, BV=block_v, **dims,
               **launch)
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
