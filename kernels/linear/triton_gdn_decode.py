"""Our Gated DeltaNet decode step: one token a sequence from its state (reference/linear_attention.py's
`step`), one kernel. A program per (sequence, value head, block of BV value rows) holds its BV x K
slice of the state (float32) in registers and, with a = exp(g) and b the write strength,

    S k  ->  u = b (v - a S k)  ->  S' = a S + u k^T  ->  o = S' (scale q),

reading the slice once and writing S' once. Decode is that traffic: at qwen3-next-decode-b64 the
states are 64 x 32 heads x 128 x 128 x 4 bytes = 134 MB in and as many out, against 0.5 MB of
q, k, v and output, so the step is bandwidth bound and its figure is GB/s of state moved.
BV 32 at K 128 is 4096 floats a program, 32 a thread at 4 warps, and 64 x 32 x 4 = 8192 programs at
batch 64. On an H200 (066d3f4, graph replays) it takes 0.0742 ms there, 3.6 TB/s of state, 85% of
the copy peak; fla's fused recurrent kernel 0.0672 ms (1.10x faster, 94%).
"""

import torch
import triton
import triton.language as tl

BV = 32


@triton.jit
def _step_kernel(Q, Kk, V, G, Beta, S, Out, SOut, scale, H, HV, ratio,
                 stride_qb, stride_vb, stride_gb,
                 KD: tl.constexpr, VD: tl.constexpr, BK: tl.constexpr, BLOCK_V: tl.constexpr):
    pid, block = tl.program_id(0), tl.program_id(1)
    b, hv = pid // HV, pid % HV
    h = hv // ratio
    keys = tl.arange(0, BK)
    rows = block * BLOCK_V + tl.arange(0, BLOCK_V)
    key_in, row_in = keys < KD, rows < VD
    q = tl.load(Q + b * stride_qb + h * KD + keys, mask=key_in, other=0.0).to(tl.float32) * scale
    k = tl.load(Kk + b * stride_qb + h * KD + keys, mask=key_in, other=0.0).to(tl.float32)
    v = tl.load(V + b * stride_vb + hv * VD + rows, mask=row_in, other=0.0).to(tl.float32)
    decay = tl.exp(tl.load(G + b * stride_gb + hv).to(tl.float32))
    strength = tl.load(Beta + b * stride_gb + hv).to(tl.float32)
    offsets = (pid * VD + rows)[:, None] * KD + keys[None, :]
    inside = row_in[:, None] & key_in[None, :]
    state = tl.load(S + offsets, mask=inside, other=0.0) * decay
    written = strength * (v - tl.sum(state * k[None, :], axis=1))
    state = state + written[:, None] * k[None, :]
    tl.store(SOut + offsets, state, mask=inside)
    out = tl.sum(state * q[None, :], axis=1)
    tl.store(Out + b * stride_vb + hv * VD + rows, out.to(Out.dtype.element_ty), mask=row_in)


def step_launcher(q, k, v, g, beta, state, *, scale):
    """A decode step's launch: q, k (B, 1, H, K), v (B, 1, HV, V), g and beta (B, 1, HV), state
    (B, HV, V, K) float32; `launcher()` returns (output (B, 1, HV, V) in v's dtype, new state)."""
    batch, _, heads, k_dim = q.shape
    v_heads, v_dim = v.shape[2], v.shape[3]
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    state = state.contiguous()
    if state.dtype != torch.float32 or tuple(state.shape) != (batch, v_heads, v_dim, k_dim):
        raise ValueError(f"the state is (B, HV, V, K) = {(batch, v_heads, v_dim, k_dim)} float32, "
                         f"not {tuple(state.shape)} {state.dtype}")
    block_v = min(BV, triton.next_power_of_2(v_dim))
    grid = (batch * v_heads, triton.cdiv(v_dim, block_v))

    def launcher():
        out, new_state = torch.empty_like(v), torch.empty_like(state)
        _step_kernel[grid](q, k, v, g, beta, state, out, new_state, scale, heads, v_heads, v_heads // heads,
                           q.stride(0), v.stride(0), g.stride(0),
                           KD=k_dim, VD=v_dim, BK=triton.next_power_of_2(k_dim), BLOCK_V=block_v)
        return out, new_state

    return launcher


def prepare(variant, problem):
    p = problem
    launcher = step_launcher(p.q, p.k, p.v, p.g, p.beta, p.state, scale=p.scale)
    launcher()
    launcher.backend = f"triton (decode step, {BV} value rows a program)"
    return launcher
