"""The chunk-local half of our Gated DeltaNet forward (kernels/linear/triton_gdn.py has the rest): for
every chunk at once, the log-decays, the inverse T = (I + A)^-1 and the WY right-hand sides, as two
kernels where there was one (`_wy_kernel`, 0.569 ms at qwen3-next-t16k on an H200 against fla's 0.344).

1. `_inverse_kernel`: log G_i (the gate's cumulative sum from the chunk's start), A (b_i G_i/G_j k_i.k_j
   below the diagonal) as 4 x 4 blocks of 16 x 16, and T by block forward substitution, stored in the
   inputs' dtype (the W dots cast T to it anyway, so W's numbers are unchanged).
2. `_w_kernel`: W_v = T diag(b) V and W_k = T diag(b G) K, T read back as one 64 x 64 tile.

Why split. Compiled offline for sm_90a (Triton 3.9, bfloat16, K = V = 128, pointers 16-byte aligned as
the JIT specialises them) the fused kernel took 255 registers and 384 bytes of stack a lane at 4 warps,
252 at 8: two programs an SM at most, and the inverse's 14 dependent steps of two reductions each had
little to hide behind; its 46 dots were all mma.sync (Triton takes Hopper's wgmma only for rows in
multiples of 64), W among them as 20 dots of 16 rows. A previous attempt kept the fused kernel and
only made W two 64-row dots through a scratch tile: no change (1.024x), which puts the time in the
inverse's part, not in W's dots. Apart, each half gets its own shape. The inverse's 16 x 16 tiles do
not divide over warps (Triton replicates them: A's 10 blocks alone take ~170 registers at 1, 2 or 4
warps), so it is tuned over 1, 2 and 4 warps, a one-warp program keeping its reductions in the warp's
shuffles, up to 8 programs an SM at 246 registers; it walks K in blocks of 32 or 64 rather than holding
four 16 x 128 key tiles. W is two 64-row dots, wgmma, 102 registers at 4 warps, 60 at 8. fla splits the
same way (chunk_fwd.py's kkt+solve kernel at 1, 2 or 4 warps, then wy_fast.recompute_w_u). The split
costs T's round trip: 64 x 64 x 2 bytes a chunk, 64 MiB written and read back at 16k tokens x 32
value heads (~35 us at 3.7 TB/s) against the fused kernel's 0.569 ms.
"""

import triton
import triton.language as tl

CHUNK = 64  # reference/linear_attention.CHUNK
SUB = 16  # the inverse's blocks: 16 rows, tl.dot's smallest tile; CHUNK / SUB = 4 blocks a side


@triton.jit
def _gates(G, Beta, Gam, T, HV, b, hv, t0, out_row, carry, S: tl.constexpr):
    """Tokens t0 .. t0 + S - 1: write strengths and log G_i from the chunk's start (`carry` is log G
    before t0; stored to Gam at `out_row`), and log G after them. Padded tokens decay and write nothing."""
    t = t0 + tl.arange(0, S)
    ok = t < T
    g = tl.load(G + (b * T + t) * HV + hv, mask=ok, other=0.0).to(tl.float32)
    gam = carry + tl.cumsum(g, 0)
    beta = tl.load(Beta + (b * T + t) * HV + hv, mask=ok, other=0.0).to(tl.float32)
    tl.store(Gam + out_row + tl.arange(0, S), gam)
    return beta, gam, carry + tl.sum(g, 0)


@triton.jit
def _keys(K, T, H, b, h, t0, k0, KD: tl.constexpr, S: tl.constexpr, BK: tl.constexpr):
    """Columns k0 .. k0 + BK - 1 of tokens t0 .. t0 + S - 1's keys (zeros past the sequence)."""
    t = t0 + tl.arange(0, S)
    kd = k0 + tl.arange(0, BK)
    return tl.load(K + ((b * T + t[:, None]) * H + h) * KD + kd[None, :], mask=(t < T)[:, None], other=0.0)


@triton.jit
def _decayed(dots, beta_i, gam_i, gam_j, DIAGONAL: tl.constexpr):
    """A's block from its rows' and columns' k_r.k_s: b_r (G_r / G_s) k_r.k_s, in float32. A block below
    the diagonal is whole (every row's token follows every column's); a diagonal block keeps r > s, and
    masks the exponent before exp (G_r / G_s above the diagonal can overflow to inf, and inf * 0 is NaN)."""
    n = tl.arange(0, dots.shape[0])
    if DIAGONAL:
        decay = tl.exp(tl.where(n[:, None] > n[None, :], gam_i[:, None] - gam_j[None, :], float("-inf")))
    else:
        decay = tl.exp(gam_i[:, None] - gam_j[None, :])
    return beta_i[:, None] * decay * dots


@triton.jit
def _substitute(a, low, r):
    """Row r of N = (I + a)^-1 - I, a strictly lower, from the rows above it (already final):
    N[r] = -a[r] - sum_{s<r} a[r, s] N[s]. N starts as -a, whose rows 0 and 1 are already final, so
    the substitution is 14 steps a block where the identity's start took 15 (fla's solve_tril too)."""
    n = tl.arange(0, a.shape[0])
    a_row = tl.sum(tl.where(n[:, None] == r, a, 0.0), 0)
    return tl.where(n[:, None] == r, (-a_row - tl.sum(a_row[:, None] * low, 0))[None, :], low)


@triton.jit
def _exact(x, y):
    """The merge's float32 dot, as "tf32x3": three tf32 products (hi.hi + hi.lo + lo.hi), float32 to
    about 2^-21, not plain tf32 (10-bit mantissa, ~5e-4 relative a product): T_30 is built from T_10
    and T_20, so tf32's rounding would compound through the merge (with gates near 1 the blocks below
    the diagonal are as large as those on it), and T would no longer be float32 up to its one cast to
    the W dots' dtype. It was "ieee" (FMAs): compiled for sm_90a that took 255 registers and 856 bytes
    of stack a lane at one warp, 2 warps 32 bytes; "tf32x3" is 246 at one warp and no stack, so the
    one-warp config can win the tuning (plain tf32, fla's pick on Hopper, 172). The merge is 16 dots of
    16 x 16 x 16 a chunk, small beside A's 10 dots of 16 x 16 x 128."""
    return tl.dot(x, y, input_precision="tf32x3")


@triton.jit
def _store_block(Inv, row, col, x, C: tl.constexpr):
    n = tl.arange(0, x.shape[0])
    tl.store(Inv + (row + n[:, None]) * C + col + n[None, :], x.to(Inv.dtype.element_ty))


@triton.jit
def _inverse_kernel(K, G, Beta, Gam, Inv, T, H, HV, ratio,
                    KD: tl.constexpr, C: tl.constexpr, S: tl.constexpr, BK: tl.constexpr):
    tl.static_assert(C == 4 * S)  # the blocks below are written out for 4 x 4
    chunk, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)  # offsets pass 2^31 beyond 256k tokens
    b, hv = bh // HV, bh % HV
    h = hv // ratio
    t0 = chunk * C  # the chunk's first token; its rows of Gam and Inv start at `out`
    out = bh * tl.num_programs(0) * C + t0
    beta0, gam0, end = _gates(G, Beta, Gam, T, HV, b, hv, t0, out, 0.0, S)
    beta1, gam1, end = _gates(G, Beta, Gam, T, HV, b, hv, t0 + S, out + S, end, S)
    beta2, gam2, end = _gates(G, Beta, Gam, T, HV, b, hv, t0 + 2 * S, out + 2 * S, end, S)
    beta3, gam3, end = _gates(G, Beta, Gam, T, HV, b, hv, t0 + 3 * S, out + 3 * S, end, S)
    # k_i.k_j for the 10 blocks on and below the diagonal, over K in blocks of BK: each block's keys
    # come from their own 16 rows (Triton cannot slice a register tile), BK columns at a time.
    d00 = tl.zeros([S, S], dtype=tl.float32)
    d11, d22, d33, d10, d21, d32, d20, d31, d30 = d00, d00, d00, d00, d00, d00, d00, d00, d00
    for k0 in range(0, KD, BK):
        k_0 = _keys(K, T, H, b, h, t0, k0, KD, S, BK)
        k_1 = _keys(K, T, H, b, h, t0 + S, k0, KD, S, BK)
        k_2 = _keys(K, T, H, b, h, t0 + 2 * S, k0, KD, S, BK)
        k_3 = _keys(K, T, H, b, h, t0 + 3 * S, k0, KD, S, BK)
        d00 += tl.dot(k_0, tl.trans(k_0))
        d11 += tl.dot(k_1, tl.trans(k_1))
        d22 += tl.dot(k_2, tl.trans(k_2))
        d33 += tl.dot(k_3, tl.trans(k_3))
        d10 += tl.dot(k_1, tl.trans(k_0))
        d21 += tl.dot(k_2, tl.trans(k_1))
        d32 += tl.dot(k_3, tl.trans(k_2))
        d20 += tl.dot(k_2, tl.trans(k_0))
        d31 += tl.dot(k_3, tl.trans(k_1))
        d30 += tl.dot(k_3, tl.trans(k_0))
    a00 = _decayed(d00, beta0, gam0, gam0, True)
    a11 = _decayed(d11, beta1, gam1, gam1, True)
    a22 = _decayed(d22, beta2, gam2, gam2, True)
    a33 = _decayed(d33, beta3, gam3, gam3, True)
    a10 = _decayed(d10, beta1, gam1, gam0, False)
    a21 = _decayed(d21, beta2, gam2, gam1, False)
    a32 = _decayed(d32, beta3, gam3, gam2, False)
    a20 = _decayed(d20, beta2, gam2, gam0, False)
    a31 = _decayed(d31, beta3, gam3, gam1, False)
    a30 = _decayed(d30, beta3, gam3, gam0, False)
    # The diagonal blocks' inverses T_ii = I + N_ii, a row at a time, the four blocks side by side.
    n00, n11, n22, n33 = -a00, -a11, -a22, -a33
    for r in range(2, S):
        n00 = _substitute(a00, n00, r)
        n11 = _substitute(a11, n11, r)
        n22 = _substitute(a22, n22, r)
        n33 = _substitute(a33, n33, r)
    n = tl.arange(0, S)
    eye = tl.where(n[:, None] == n[None, :], 1.0, 0.0)
    t00, t11, t22, t33 = n00 + eye, n11 + eye, n22 + eye, n33 + eye
    # Below the diagonal, block row i of (I + A) T = I reads (I + A_ii) T_ij + sum_{j<=m<i} A_im T_mj = 0,
    # so T_ij = -T_ii sum_{m=j}^{i-1} A_im T_mj, with every T_mj on the right one diagonal nearer.
    t10 = -_exact(t11, _exact(a10, t00))
    t21 = -_exact(t22, _exact(a21, t11))
    t32 = -_exact(t33, _exact(a32, t22))
    t20 = -_exact(t22, _exact(a20, t00) + _exact(a21, t10))
    t31 = -_exact(t33, _exact(a31, t11) + _exact(a32, t21))
    t30 = -_exact(t33, _exact(a30, t00) + _exact(a31, t10) + _exact(a32, t20))
    # The 10 blocks on and below the diagonal; the 6 above are never written (`_w_kernel` masks them).
    _store_block(Inv, out, 0, t00, C)
    _store_block(Inv, out + S, 0, t10, C)
    _store_block(Inv, out + S, S, t11, C)
    _store_block(Inv, out + 2 * S, 0, t20, C)
    _store_block(Inv, out + 2 * S, S, t21, C)
    _store_block(Inv, out + 2 * S, 2 * S, t22, C)
    _store_block(Inv, out + 3 * S, 0, t30, C)
    _store_block(Inv, out + 3 * S, S, t31, C)
    _store_block(Inv, out + 3 * S, 2 * S, t32, C)
    _store_block(Inv, out + 3 * S, 3 * S, t33, C)


@triton.jit
def _times_inverse(inverse, X, x_rows, weight, Out, rows, ok, D: tl.constexpr, BD: tl.constexpr):
    """Out[rows] = T diag(weight) X[x_rows], BD columns at a time: one dot of 64 rows each (wgmma)."""
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        x = tl.load(X + x_rows[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
        x = (weight[:, None] * x.to(tl.float32)).to(x.dtype)
        tl.store(Out + rows[:, None] * D + d[None, :], tl.dot(inverse.to(x.dtype), x).to(Out.dtype.element_ty))


@triton.jit
def _w_kernel(K, V, Beta, Gam, Inv, Wk, Wv, T, H, HV, ratio,
              KD: tl.constexpr, VD: tl.constexpr, C: tl.constexpr, S: tl.constexpr):
    """W_v = T diag(b) V and W_k = T diag(b G) K of one chunk, T's 64 x 64 in the inputs' dtype as the
    fused kernel's blocks were cast to it, 64 columns at a time (fla's recompute_w_u too)."""
    chunk, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b, hv = bh // HV, bh % HV
    h = hv // ratio
    i = tl.arange(0, C)
    t = chunk * C + i
    ok = t < T
    rows = bh * tl.num_programs(0) * C + t
    inverse = tl.load(Inv + rows[:, None] * C + i[None, :], mask=i[:, None] // S >= i[None, :] // S, other=0.0)
    beta = tl.load(Beta + (b * T + t) * HV + hv, mask=ok, other=0.0).to(tl.float32)
    gam = tl.load(Gam + rows)
    _times_inverse(inverse, V, (b * T + t) * HV + hv, beta, Wv, rows, ok, VD, min(VD, 64))
    _times_inverse(inverse, K, (b * T + t) * H + h, beta * tl.exp(gam), Wk, rows, ok, KD, min(KD, 64))
