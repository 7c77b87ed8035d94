"""Gated DeltaNet (Qwen3-Next's linear-attention layer): the correctness oracle and a readable chunked form.

Per value head, a state S (v_dim x k_dim) follows the gated delta rule

    S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T,    o_t = S_t (scale q_t),

with a_t = exp(g_t) in (0, 1] the decay, b_t in (0, 1) the write strength, q and k L2-normalised.
Layout as flash-linear-attention's: q, k (B, T, H, K); v (B, T, HV, V); g, beta (B, T, HV); with
HV > H, value head h reads query/key head h // (HV / H) (grouped value heads, Qwen3-Next's 16 / 32).

`recurrence` runs the rule a token at a time (`step`, also a decode step from a given state): the oracle. `chunked` is the same function computed
a chunk of C tokens at a time, the algorithm fused kernels implement. Inside a chunk, with
G_i = a_1 ... a_i (from the chunk's start) and S_0 the state entering it, the rule unrolls to

    S_i = G_i S_0 + sum_{j<=i} (G_i / G_j) u_j k_j^T,    u_i = b_i (v_i - a_i S_{i-1} k_i),

so the new values U solve a unit lower-triangular system, (I + A) U = diag(b) V - diag(b G) K S_0^T
with A_ij = b_i (G_i / G_j) k_i.k_j for j < i (the WY form), and then

    O = diag(G) Q S_0^T + ((Q K^T) o D o lower) U,    D_ij = G_i / G_j,
    S_C = G_C S_0 + U^T diag(G_C / G) K.

Everything but S's hand-over from chunk to chunk is independent across chunks, and is computed for
all chunks at once here; the hand-over is the one loop.
"""

import torch

CHUNK = 64  # flash-linear-attention's chunk, and our kernel's


def _value_heads(x, n_v_heads):
    """(B, T, H, D) query/key heads repeated for the value heads that read them: (B, T, HV, D)."""
    return x.repeat_interleave(n_v_heads // x.shape[2], dim=2)


def step(q, k, v, g, beta, state, *, scale):
    """One token of the rule from `state` (B, HV, V, K): a decode step, with q, k (B, 1, H, K), v
    (B, 1, HV, V), g and beta (B, 1, HV). Computed in the wider of v's and the state's dtypes; returns
    (the output (B, 1, HV, V) in v's dtype, the new state in the state's dtype). Written as

        S_t = a S + b (v - a S k) k^T,    o = S_t (scale q),

    the rule with a S_{t-1} factored out: one read and one write of the state."""
    n_v_heads, work = v.shape[2], torch.promote_types(v.dtype, state.dtype)
    q, k = (_value_heads(x, n_v_heads)[:, 0].to(work) for x in (q * scale, k))
    decayed = state.to(work) * g[:, 0].to(work).exp()[..., None, None]
    new_value = beta[:, 0, :, None].to(work) * (v[:, 0].to(work) - (decayed @ k[..., None])[..., 0])
    new_state = decayed + new_value[..., None] * k[..., None, :]
    return (new_state @ q[..., None])[..., 0][:, None].to(v.dtype), new_state.to(state.dtype)


def recurrence(q, k, v, g, beta, *, scale):
    """The gated delta rule, one token at a time (`step`) from a zero state, in the inputs' dtype.
    Returns (B, T, HV, V)."""
    batch, tokens, n_v_heads, v_dim = v.shape
    state = torch.zeros(batch, n_v_heads, v_dim, k.shape[-1], dtype=v.dtype, device=v.device)
    out = torch.empty_like(v)
    for t in range(tokens):
        now = slice(t, t + 1)
        out[:, now], state = step(q[:, now], k[:, now], v[:, now], g[:, now], beta[:, now], state, scale=scale)
    return out


def chunked(q, k, v, g, beta, *, scale, chunk=CHUNK):
    """The same rule a chunk at a time (the module's docstring); T need not be a multiple of `chunk`:
    the last chunk is padded with tokens that write nothing (b = 0) and decay nothing (g = 0). Computed
    in float32 at least (a triangular solve has no bfloat16), returned in v's dtype."""
    dtype, work = v.dtype, torch.promote_types(v.dtype, torch.float32)
    q, k, v, g, beta = (x.to(work) for x in (q, k, v, g, beta))
    n_v_heads = v.shape[2]
    batch, tokens, _, v_dim = v.shape
    pad = -tokens % chunk
    n = (tokens + pad) // chunk

    def chunks(x):  # (B, T, HV, ...) -> (B, HV, n, C, ...)
        x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 3) + (0, 0, 0, pad))
        return x.view(batch, n, chunk, n_v_heads, *x.shape[3:]).transpose(1, 3).transpose(2, 3)

    q, k = chunks(_value_heads(q, n_v_heads) * scale), chunks(_value_heads(k, n_v_heads))
    v, g, beta = chunks(v), chunks(g[..., None])[..., 0], chunks(beta[..., None])[..., 0]
    log_decay = g.cumsum(-1)  # log G_i within each chunk
    ratio = (log_decay[..., :, None] - log_decay[..., None, :])  # log G_i / G_j
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=v.device).tril()
    decay_ij = torch.where(lower, ratio, float("-inf")).exp()  # zero above the diagonal
    a = (beta[..., :, None] * decay_ij * (k @ k.transpose(-1, -2))).tril(-1)
    eye = torch.eye(chunk, dtype=v.dtype, device=v.device)
    solve = torch.linalg.solve_triangular(eye + a, torch.cat(
        [beta[..., None] * v, (beta * log_decay.exp())[..., None] * k], dim=-1), upper=False, unitriangular=True)
    w_v, w_k = solve[..., :v_dim], solve[..., v_dim:]  # U = w_v - w_k S_0^T
    attend = (q @ k.transpose(-1, -2)) * decay_ij
    to_end = (log_decay[..., -1:] - log_decay).exp()  # G_C / G_j
    state = torch.zeros(batch, n_v_heads, v_dim, k.shape[-1], dtype=v.dtype, device=v.device)
    # A chunk's operands by unbind and its outputs by one stack: an index a chunk into each operand, and
    # a write into one output, each cost the backward a zero (or copied) tensor of the whole operand,
    # 7 of them a chunk, 1024 chunks at 64k tokens
    outs = []
    for w_v_c, w_k_c, q_c, k_c, attend_c, log_decay_c, to_end_c in zip(
            *(x.unbind(2) for x in (w_v, w_k, q, k, attend, log_decay, to_end))):
        new_values = w_v_c - w_k_c @ state.transpose(-1, -2)
        outs.append(log_decay_c.exp()[..., None] * (q_c @ state.transpose(-1, -2)) + attend_c @ new_values)
        state = (log_decay_c[..., -1].exp()[..., None, None] * state
                 + new_values.transpose(-1, -2) @ (to_end_c[..., None] * k_c))
    out = torch.stack(outs, dim=2)
    return out.reshape(batch, n_v_heads, n * chunk, v_dim).transpose(1, 2)[:, :tokens].to(dtype)


def prepare(variant, problem):
    """The reference implementation, timed as the unfused floor: the chunked form, eager; at decode
    the step, returning (output, new state)."""
    p = problem
    if p.state is not None:
        return lambda: step(p.q, p.k, p.v, p.g, p.beta, p.state, scale=p.scale)
    return lambda: chunked(p.q, p.k, p.v, p.g, p.beta, scale=p.scale)
