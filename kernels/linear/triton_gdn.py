"""Our Gated DeltaNet forward: the chunked WY algorithm of reference/linear_attention.py in four kernels.

1. `_inverse_kernel` and 2. `_w_kernel` (kernels/linear/triton_gdn_wy.py), every chunk at once: the
   chunk's cumulative log-decay, A (b_i G_i/G_j k_i.k_j below the diagonal), T = (I + A)^-1 by block
   forward substitution; then W_v = T diag(b) V, W_k = T diag(b G) K.
3. `_state_kernel`, the one sequential part, a program per (sequence, value head, value block) walking
   the chunks: stores the state entering each chunk, the chunk's new values U = W_v - W_k S^T, and
   hands S on: S <- G_C S + U^T diag(G_C / G) K.
4. `_output_kernel`, every chunk at once again: O = diag(G) Q S^T + ((Q K^T) o D o lower) U.

Dots take the inputs' dtype (bfloat16 on the GPU, as flash-linear-attention's do) and accumulate in
float32: T and the state are kept in float32 and cast to that dtype as a dot's operand; decays stay
float32. T and the states entering each chunk go through memory in the inputs' dtype: their readers
cast them to it for their dots anyway (the states in float32 only doubled the traffic, 2 GiB at 64k).
On the GPU each kernel's warps, stages and block are autotuned (`_tuned`).

Measured on an H200 at qwen3-next-t16k (session 10, torch.profiler, tools/probe_kernels.py): 1.41 ms a
call in three kernels, the WY one (now 1 and 2) 0.569, the state pass 0.522, the output 0.317 ms,
against fla-core's 0.344, 0.308 and 0.262 ms for the same steps (0.946 ms). The changes since, from
fla's kernels and an offline compile for sm_90a (Triton 3.9, bfloat16, K = V = 128), took a call to
0.844 ms at 16k and 3.375 ms at 64k (session 12, `variantbench try`, do_bench 0.845 and 3.378), 0.593x
and 0.575x the three kernels' in the same gate; fla-core read 0.956 ms at 16k on that machine that day:

- The WY kernel split in two (the other module's docstring: 255 registers, 8 warps an SM, all mma.sync).
- The state pass holds S^T, keys down (K x BV): its update is K^T diag(G_C / G) U, a dot of K = 128
  rows, where S's U^T diag(...) K had BV rows; Triton takes Hopper's wgmma only for rows in multiples
  of 64, so at BV 16 or 32 (its pick for 256 or 128 programs on 132 SMs at batch 1) that dot, on the
  sequential path, was mma.sync. The decay G_C / G now scales U (64 x BV) where it scaled K (64 x 128
  in float32); G_C is one load where it was a reduction over the chunk; the programs of one value
  head are adjacent (value block fastest), so K and W_k, read by every block of a head, come from L2
  together at any batch. Compiled (4 warps, 2 stages): wgmma for both dots at every block; 128, 168,
  223 -> 70, 108, 168 registers at BV 16, 32, 64.
- The states are stored keys first, (K, V) a chunk, as the state pass holds them: the output kernel's
  inter-chunk dot Q S^T takes them as they are.
- The output kernel's grid runs the value blocks, then the value heads of one key head, fastest: the
  2 x 2 programs reading one chunk's Q and K (64 KiB) are adjacent, where they were 8192 programs apart
  at 16k (the value blocks), so Q and K likely came from memory twice (128 MiB more of its ~640). A value
  block of 128 (Q K^T once a chunk; fla's first config; 170 registers at 8 warps, no stack) joins the
  tuning, and the scale moves from Q (a 64 x 128 float32 round trip) to the float32 result.

Bytes a chunk (64 tokens of one value head, K = V = 128, bfloat16; x 8192 chunks at 16k tokens, so
1 KiB a chunk is 8 MiB a call): k 16 KiB, read by all four kernels (L2 serves the value heads and
blocks that share it when they run together), v 16 KiB read once, T 8 KiB and W 32 KiB written and
read once, U 16 KiB written and read once, the states 32 KiB written and read once, out 16 KiB.
"""

import math

import torch
import triton
import triton.language as tl

from kernels.linear import triton_gdn_decode
from kernels.linear.triton_gdn_wy import CHUNK, SUB, _inverse_kernel, _w_kernel


@triton.jit
def _state_kernel(K, Gam, Wk, Wv, U, States, T, H, HV, ratio, n_chunks, B,
                  KD: tl.constexpr, VD: tl.constexpr, BV: tl.constexpr, C: tl.constexpr):
    """S^T, keys down, a value block across: both dots have 64 or K rows (wgmma on Hopper) and the
    states go out as the output kernel reads them (the module's docstring has the numbers)."""
    v_block, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b, hv = bh // HV, bh % HV
    h = hv // ratio
    i = tl.arange(0, C)
    kd, vd = tl.arange(0, KD), v_block * BV + tl.arange(0, BV)
    state = tl.zeros([KD, BV], dtype=tl.float32)
    for chunk in range(n_chunks):
        t = chunk * C + i
        ok = t < T
        tl.store(States + ((bh * n_chunks + chunk) * KD + kd[:, None]) * VD + vd[None, :],
                 state.to(States.dtype.element_ty))
        first = bh * n_chunks * C + chunk * C
        row = first + i
        w_k = tl.load(Wk + row[:, None] * KD + kd[None, :])
        w_v = tl.load(Wv + row[:, None] * VD + vd[None, :]).to(tl.float32)
        u = w_v - tl.dot(w_k, state.to(w_k.dtype))
        tl.store(U + row[:, None] * VD + vd[None, :], u.to(U.dtype.element_ty))
        gam = tl.load(Gam + row)
        gam_end = tl.load(Gam + first + C - 1)  # padded tokens decay nothing: the chunk's last row is G_C
        k_t = tl.load(K + ((b * T + t[None, :]) * H + h) * KD + kd[:, None], mask=ok[None, :], other=0.0)
        to_end = (tl.exp(gam_end - gam)[:, None] * u).to(k_t.dtype)
        state = tl.exp(gam_end) * state + tl.dot(k_t, to_end)


@triton.jit
def _output_kernel(Q, K, Gam, U, States, Out, T, H, HV, ratio, n_chunks, scale,
                   KD: tl.constexpr, VD: tl.constexpr, BV: tl.constexpr, C: tl.constexpr):
    # axis 0 runs a key head's value heads x value blocks: the programs that read one chunk's q, k are adjacent
    column, chunk, bk = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    v_block, within = column % (VD // BV), column // (VD // BV)
    b, h = bk // H, bk % H
    hv = h * ratio + within
    bh = b * HV + hv
    i = tl.arange(0, C)
    t = chunk * C + i
    ok = t < T
    kd, vd = tl.arange(0, KD), v_block * BV + tl.arange(0, BV)
    q = tl.load(Q + ((b * T + t[:, None]) * H + h) * KD + kd[None, :], mask=ok[:, None], other=0.0)
    k = tl.load(K + ((b * T + t[:, None]) * H + h) * KD + kd[None, :], mask=ok[:, None], other=0.0)
    row = bh * n_chunks * C + t
    gam = tl.load(Gam + row)
    state = tl.load(States + ((bh * n_chunks + chunk) * KD + kd[:, None]) * VD + vd[None, :])
    inter = tl.exp(gam)[:, None] * tl.dot(q, state.to(q.dtype))
    causal = i[:, None] >= i[None, :]
    attend = tl.where(causal, tl.dot(q, tl.trans(k)) * tl.exp(tl.where(causal, gam[:, None] - gam[None, :], 0.0)), 0.0)
    u = tl.load(U + row[:, None] * VD + vd[None, :])
    out = scale * (inter + tl.dot(attend.to(u.dtype), u))
    tl.store(Out + ((b * T + t[:, None]) * HV + hv) * VD + vd[None, :], out.to(Out.dtype.element_ty), mask=ok[:, None])


def _tuned(kernel, warps, stages, key=("T", "HV", "KD", "VD"), **block):
    """The kernel autotuned over warps, stages and its block where `block` names one (BV=(32, 64)): each
    of our kernels rewrites its outputs whole from inputs it does not write, so a config's trial runs
    change nothing."""
    name, sizes = next(iter(block.items()), (None, (None,)))
    configs = [triton.Config({name: size} if name else {}, num_warps=w, num_stages=st)
               for size in sizes for w in warps for st in stages]
    return triton.autotune(configs=configs, key=key, cache_results=True)(kernel)


# The inverse's 16 x 16 tiles want few threads (its reductions then stay inside a warp) and many
# programs an SM: 1 to 4 warps, K in blocks of 32 or 64 (fla's kkt+solve: BK 32, 64; 1, 2, 4 warps).
_tuned_inverse = _tuned(_inverse_kernel, (1, 2, 4), (1, 2), key=("T", "HV", "KD"), BK=(32, 64))
_tuned_w = _tuned(_w_kernel, (4, 8), (1, 2))  # wgmma wants 4 warps or more
# the batch too: the state pass's programs are batch x value heads x value blocks, so its best block
# at batch 1 (qwen3-next-t16k) need not be the block's at batch 4 (prefill-b4-s4k), same T and heads.
# Stages pipeline the next chunk's W_k, W_v and K loads behind this chunk's dots (fla tries 2 to 4).
_tuned_state = _tuned(_state_kernel, (4, 8), (2, 3), key=("T", "HV", "KD", "VD", "B"), BV=(16, 32, 64))
# No value block of 32: at 4 warps Triton 3.6's build of it for an H200 faults (illegal address at
# qwen3-next-t16k, both stages; 8 warps and blocks of 64 and 128 ran clean, each config alone in its own
# process: reports/truth/lanes-57a9be4/k12-d0ace25/gdn_fault.log).
_tuned_output = _tuned(_output_kernel, (4, 8), (1, 2), BV=(64, 128))


def gdn_launcher(q, k, v, g, beta, *, scale, block_v=None):
    """A launch of the chunked forward: `launcher()` returns (B, T, HV, V) in v's dtype. q, k (B, T, H,
    K) contiguous, v (B, T, HV, V), g (B, T, HV) log-decays, beta (B, T, HV); K and V powers of two.
    block_v: rows of V an output program computes. On the GPU, unless given (or K or V is under 64),
    the blocks are tuned; otherwise the output's is block_v (default min(V, 64)), the state pass's at
    most 32, the inverse's K block min(K, 64)."""
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
    # SMs, 128 at 32 rows, 256 at 16 (fla's pass: 64 or 128), so its block is narrower than the output
    # kernel's (each of whose programs recomputes Q K^T). On the GPU both are tuned; in the interpreter
    # these widths run, apart, as the tests ask.
    state_block_v = min(block_v, 32)
    n_chunks = math.ceil(tokens / CHUNK)
    rows = batch * v_heads * n_chunks * CHUNK
    gam = torch.empty(rows, device=v.device, dtype=torch.float32)
    inverse = torch.empty(rows, CHUNK, device=v.device, dtype=v.dtype)
    w_k = torch.empty(rows, k_dim, device=v.device, dtype=v.dtype)
    w_v = torch.empty(rows, v_dim, device=v.device, dtype=v.dtype)
    u = torch.empty_like(w_v)
    states = torch.empty(batch * v_heads * n_chunks, k_dim, v_dim, device=v.device, dtype=v.dtype)
    ratio = v_heads // heads
    dims = dict(KD=k_dim, VD=v_dim, C=CHUNK)
    chunks = (n_chunks, batch * v_heads)
    if v.is_cuda and block_v_given is None and min(k_dim, v_dim) >= 64:  # blocks, warps, stages tuned here
        inverse_pass, w_pass = _tuned_inverse[chunks], _tuned_w[chunks]
        state_pass = _tuned_state[lambda meta: (v_dim // meta["BV"], batch * v_heads)]
        output = _tuned_output[lambda meta: (v_dim // meta["BV"] * ratio, n_chunks, batch * heads)]
        inverse_block, state_block, output_block = {}, {}, {}
    else:
        inverse_pass, w_pass = _inverse_kernel[chunks], _w_kernel[chunks]
        state_pass = _state_kernel[(v_dim // state_block_v, batch * v_heads)]
        output = _output_kernel[(v_dim // block_v * ratio, n_chunks, batch * heads)]
        inverse_block, state_block, output_block = {"BK": min(k_dim, 64)}, {"BV": state_block_v}, {"BV": block_v}

    def launcher():
        inverse_pass(k, g, beta, gam, inverse, tokens, heads, v_heads, ratio, KD=k_dim, C=CHUNK, S=SUB,
                     **inverse_block)
        w_pass(k, v, beta, gam, inverse, w_k, w_v, tokens, heads, v_heads, ratio, S=SUB, **dims)
        state_pass(k, gam, w_k, w_v, u, states, tokens, heads, v_heads, ratio, n_chunks, batch, **state_block,
                   **dims)
        out = torch.empty_like(v)
        output(q, k, gam, u, states, out, tokens, heads, v_heads, ratio, n_chunks, scale, **output_block, **dims)
        return out

    return launcher


def prepare_function(variant, problem):
    """Our kernels as a function of any q, k, v, g, beta of the problem's shapes (a block's); at decode
    of any q, k, v, g, beta, state, returning (output, new state) (triton_gdn_decode.py)."""
    scale = problem.scale
    if problem.state is not None:
        def step(q, k, v, g, beta, state):
            return triton_gdn_decode.step_launcher(q, k, v, g, beta, state, scale=scale)()

        step.backend = "triton (decode step)"
        return step

    def attend(q, k, v, g, beta):
        return gdn_launcher(q, k, v, g, beta, scale=scale)()

    attend.backend = "triton"
    return attend


def prepare(variant, problem):
    p = problem
    if p.state is not None:  # a decode step: its own kernel (kernels/linear/triton_gdn_decode.py)
        return triton_gdn_decode.prepare(variant, p)
    launcher = gdn_launcher(p.q, p.k, p.v, p.g, p.beta, scale=p.scale)
    launcher()
    return launcher
