"""A transformer block composed of its pieces' references: eager, readable, float64-able. The block
family's oracle and its unfused floor.

x (B, S, dim) -> (B, S, dim). Pre-norm: h = x + attn(norm(x)); out = h + mlp(norm(h)). Sandwich
(Gemma-2): each piece's output is normed again before its residual add. Mixture-of-depths: a router
picks the top `capacity` of each sequence's tokens; only they go through the block (attending to each
other, causally in their own order), scaled by their router weight; the rest ride the residual.

`rows` (query positions) asks for the output at those positions only: keys and values still come from
every token, so the check compares sampled rows at shapes whose full float64 block would not fit.
Decode: x is the one new token per sequence; its key and value are written at position kv_len - 1 of
the cache, whose earlier positions hold the sequence so far. A gated DeltaNet layer's cache is
(convolution state, rule state) instead: the last width - 1 tokens' projections before the short
convolution, and the rule's state (B, HV, V, K) after the tokens before.
"""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reference import linear_attention as reference_linear
from reference import mla as reference_mla
from reference import moe as reference_moe
from reference.attention import attention


def lookup(table, name, what):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(table)}") from None


def rms_norm(x, weight, eps):
    """x / rms(x) * weight, in float32 at least."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    return (wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps) * weight.to(wide.dtype)).to(x.dtype)


def gemma_rms_norm(x, weight, eps):
    """Gemma scales by (1 + weight): a zero weight is the identity scale."""
    return rms_norm(x, 1 + weight.to(torch.promote_types(weight.dtype, torch.float32)), eps)


def layer_norm(x, weight, eps):
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    return F.layer_norm(wide, wide.shape[-1:], weight.to(wide.dtype), None, eps).to(x.dtype)


NORMS = {"rms": rms_norm, "gemma_rms": gemma_rms_norm, "layer": layer_norm}


def rope(x, positions, theta):
    """Rotary embedding, the rotate-half layout (Llama's): x (B, H, S, D), positions (S,) or (B, S)."""
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, device=x.device, dtype=torch.float64) / half)
    angles = positions.to(torch.float64)[..., None] * freqs  # (..., S, half)
    if angles.dim() == 3:  # per sequence: (B, 1, S, half)
        angles = angles[:, None]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def swiglu(x, w13, w2):
    return reference_moe.swiglu(x, w13, w2)


def geglu(x, w13, w2):
    """Gemma's gated GELU (tanh approximation): w13 holds gate then up, nn.Linear layout."""
    gate, up = (x @ w13.t()).chunk(2, dim=-1)
    return (F.gelu(gate, approximate="tanh") * up) @ w2.t()


def gelu_mlp(x, w13, w2):
    """ViT's MLP: one up projection (w13 is (ffn, dim) here), exact GELU, one down projection."""
    return F.gelu(x @ w13.t()) @ w2.t()


DENSE_MLPS = {"swiglu": swiglu, "geglu": geglu, "gelu": gelu_mlp}


def mlp(recipe, config, w, x):
    """The recipe's MLP or MoE on x (..., dim)."""
    if recipe.mlp != "moe":
        return lookup(DENSE_MLPS, recipe.mlp, "MLP")(x, w.w13, w.w2)
    m = w.moe
    flat = x.reshape(-1, x.shape[-1])
    y = reference_moe.moe(recipe.router, config.moe_config, flat, m.router_weight, m.selection_bias, m.w13, m.w2,
                          m.shared13, m.shared2, compute_dtype=x.dtype)
    return y.view(x.shape)


def project_qkv(recipe, config, w, h, positions):
    """(q, k, v), each (B, heads, S, head dim), RoPE'd where the recipe has it."""
    batch, tokens, _ = h.shape
    q = (h @ w.wq.t()).view(batch, tokens, config.n_heads, config.head_dim).transpose(1, 2)
    k = (h @ w.wk.t()).view(batch, tokens, config.n_kv_heads, config.head_dim).transpose(1, 2)
    v = (h @ w.wv.t()).view(batch, tokens, config.n_kv_heads, config.head_dim).transpose(1, 2)
    if recipe.qk_norm:  # Qwen3: RMS norm of each head's query and key before RoPE
        q, k = rms_norm(q, w.q_norm, config.eps), rms_norm(k, w.k_norm, config.eps)
    if recipe.rope:
        q, k = rope(q, positions, config.rope_theta), rope(k, positions, config.rope_theta)
    return q, k, v


@dataclass
class AttentionCall:
    """What an attention variant's mask and score functions read of a call: its sizes, its tensors.
    The block's queries are the last q_len of kv_len positions, as the attention family's are."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_len: int
    doc_start: None = None

    @property
    def kv_len(self):
        return self.k.shape[2]

    @property
    def n_heads(self):
        return self.q.shape[1]

    @property
    def batch(self):
        return self.q.shape[0]


def attend(recipe, q, k, v, q_idx, q_len):
    """The recipe's attention variant: rows q (B, H, rows, D) of a call of q_len queries, the rows'
    query indices q_idx, over every key k, v (B, Hkv, kv_len, D)."""
    call = AttentionCall(q, k, v, q_len)
    return attention(q, k, v, mask_mod=recipe.attention.mask_mod(call), score_mod=recipe.attention.score_mod(call),
                     q_idx=q_idx)


def latent_rows(config, w, h, positions):
    """(q_nope, q_pe, cache rows) of multi-head latent attention (DeepSeek-V3): the query through its
    own low-rank bottleneck (down, RMS norm, up to every head's nope and RoPE parts), and each token's
    cache row, its normed latent and its one RoPE key shared by every head."""
    m = config.mla_config
    batch, tokens, _ = h.shape
    q = (rms_norm(h @ w.w_dq.t(), w.q_a_norm, config.eps) @ w.w_uq.t()).view(batch, tokens, m.n_heads, m.qk_dim)
    q = q.transpose(1, 2)
    q_nope, q_pe = q[..., :m.qk_nope_dim], rope(q[..., m.qk_nope_dim:], positions, config.rope_theta)
    kv = h @ w.w_dkv.t()
    latent = rms_norm(kv[..., :m.kv_lora_rank], w.kv_a_norm, config.eps)
    k_pe = rope(kv[:, None, :, m.kv_lora_rank:], positions, config.rope_theta)[:, 0]
    return q_nope, q_pe, torch.cat([latent, k_pe], dim=-1)


def latent_attention(config, w, h, positions, picked, cache):
    """The attention output (B, rows, H v_head) of an MLA block: decompressed at prefill, absorbed over
    the latent cache at decode (reference/mla.py; equal in exact arithmetic)."""
    m = config.mla_config
    q_nope, q_pe, rows = latent_rows(config, w, h, positions)
    start = 0 if cache is None else cache.shape[1] - h.shape[1]
    every = rows if cache is None else torch.cat([cache[:, :start].to(rows.dtype), rows], dim=1)
    form = reference_mla.decompressed if cache is None else reference_mla.absorbed
    out = form(q_nope[:, :, picked], q_pe[:, :, picked], every, w.mla.w_uk, w.mla.w_uv, scale=m.qk_dim ** -0.5,
               q_len=h.shape[1], q_idx=picked)
    return out.transpose(1, 2).reshape(h.shape[0], picked.numel(), -1) @ w.wo.t()


def l2_normed(x, eps=1e-6):
    """x / |x| along the last dim, as Qwen3-Next normalises q and k (fla's l2norm, eps inside the root)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def causal_conv(x, weight, before=None):
    """Each channel's short causal convolution, x (B, S, C) with weight (C, width), then SiLU. `before`
    (B, width - 1, C): the channels of the tokens before x (a decode step's convolution state), zeros
    where None (a sequence's start)."""
    width = weight.shape[1]
    padded = F.pad(x.transpose(1, 2), (width - 1, 0)) if before is None else torch.cat([before, x], 1).transpose(1, 2)
    out = F.conv1d(padded, weight[:, None], groups=x.shape[-1])
    return F.silu(out.transpose(1, 2))


def delta_inputs(config, w, h, conv_state=None):
    """(q, k, v, g, beta, z) of Qwen3-Next's gated DeltaNet from h (B, S, dim): q, k, v projected and
    through the short convolution (after `conv_state`'s tokens, see causal_conv), q and k L2-normed;
    the decay g = -exp(A_log) softplus(a + dt_bias) and the write strength beta = sigmoid(b), per value
    head; z, the output gate."""
    lin = config.linear_config
    batch, tokens, _ = h.shape
    key, value = lin.n_qk_heads * lin.k_dim, lin.n_v_heads * lin.v_dim
    q, k, v, z = (h @ w.w_qkvz.t()).split([key, key, value, value], dim=-1)
    b, a = (h @ w.w_ba.t()).split([lin.n_v_heads, lin.n_v_heads], dim=-1)
    q, k, v = causal_conv(torch.cat([q, k, v], dim=-1), w.conv_weight, conv_state).split([key, key, value], dim=-1)
    wide = torch.promote_types(h.dtype, torch.float32)
    g = -w.a_log.to(wide).exp() * F.softplus(a.to(wide) + w.dt_bias.to(wide))
    return (l2_normed(q.view(batch, tokens, lin.n_qk_heads, lin.k_dim)),
            l2_normed(k.view(batch, tokens, lin.n_qk_heads, lin.k_dim)), v.view(batch, tokens, lin.n_v_heads, lin.v_dim),
            g, torch.sigmoid(b), z.view(batch, tokens, lin.n_v_heads, lin.v_dim))


def delta_attention(config, w, h, picked, cache=None):
    """Gated DeltaNet's output (B, rows, dim): the gated delta rule (reference/linear_attention.py),
    each value head's output RMS-normed and gated by SiLU(z), projected out. `cache` (decode):
    (convolution state, rule state), and the one new token takes a step of the rule from it."""
    lin = config.linear_config
    conv_state, state = (None, None) if cache is None else cache
    q, k, v, g, beta, z = delta_inputs(config, w, h, conv_state)
    if state is None:
        out = reference_linear.chunked(q, k, v, g, beta, scale=lin.k_dim ** -0.5)[:, picked]
    else:
        out = reference_linear.step(q, k, v, g, beta, state, scale=lin.k_dim ** -0.5)[0][:, picked]
    gated = rms_norm(out, w.out_norm, config.eps) * F.silu(z[:, picked])
    return gated.reshape(h.shape[0], picked.numel(), -1) @ w.wo.t()


def attended(recipe, config, w, x, *, rows=None, cache=None, positions=None):
    """The layer's first half at `rows`: h = x + attention(norm(x)), the attention's output normed
    again first where the residual is sandwich. Arguments as `layer`'s."""
    norm = lookup(NORMS, recipe.norm, "norm")
    batch, tokens, _ = x.shape
    latent, linear = config.mla_config is not None, config.linear_config is not None
    start = 0 if cache is None or linear else (cache.shape[1] if latent else cache[0].shape[2]) - tokens
    if positions is None:
        positions = torch.arange(start, start + tokens, device=x.device)
    picked = torch.arange(tokens, device=x.device) if rows is None else rows.to(x.device)
    h = norm(x, w.attn_norm, config.eps)
    if linear:
        out = delta_attention(config, w, h, picked, cache)
    elif latent:
        out = latent_attention(config, w, h, positions, picked, cache)
    else:
        q, k, v = project_qkv(recipe, config, w, h, positions)
        if cache is not None:  # decode: the new keys after the cached ones
            k = torch.cat([cache[0][:, :, :start].to(k.dtype), k], dim=2)
            v = torch.cat([cache[1][:, :, :start].to(v.dtype), v], dim=2)
        out = attend(recipe, q[:, :, picked], k, v, q_idx=picked, q_len=tokens)
        out = out.transpose(1, 2).reshape(batch, picked.numel(), -1) @ w.wo.t()
    if recipe.residual == "sandwich":
        out = norm(out, w.post_attn_norm, config.eps)
    return x[:, picked] + out


def layer(recipe, config, w, x, *, rows=None, cache=None, positions=None):
    """One pass of the block's layer (norms, attention, MLP, residuals) over x (B, S, dim); see the
    module docstring for `rows` and `cache`. `positions` (B, S): each token's position for RoPE, where
    it is not its index (mixture-of-depths runs the layer over the chosen tokens alone)."""
    norm = lookup(NORMS, recipe.norm, "norm")
    h = attended(recipe, config, w, x, rows=rows, cache=cache, positions=positions)
    out = mlp(recipe, config, w, norm(h, w.mlp_norm, config.eps))
    if recipe.residual == "sandwich":
        out = norm(out, w.post_mlp_norm, config.eps)
    return h + out


# A row's MoE routing counts as decided where each call that decided it (reference/moe.py
# Router.margins) exceeds this many times the working dtype's error in that same call (its root mean
# square over the rows, clear_of_ties): the check's margin, as its tolerances are multiples of the
# working dtype's error (variantbench/cases.py).
ROUTING_MARGIN = 8


def routing_decided(recipe, problem, rows):
    """(B, len(rows)) bool: where a sequence's MoE routing at a position of `rows` stands clear of a tie,
    each deciding call of the router on the float64 hidden state (routed in float32 as the reference
    routes) over ROUTING_MARGIN x that call's error in the working dtype (the problem's; clear_of_ties).
    Near a tie either choice is right, and the two swap an expert's whole contribution, outputs and
    gradients: the check compares decided rows only (DeepSeek-V3's stand-in, 56 experts at bfloat16,
    failed its gradient check on such a row, session 17). All true where the block has no MoE (the
    mixture-of-depths block has none) or its router is a plug-in's (no Router.margins)."""
    decided = torch.ones(problem.x.shape[0], rows.numel(), dtype=torch.bool, device=problem.device)
    moe = problem.config.moe_config
    if moe is None or recipe.depth_capacity is not None:
        return decided
    # the routing needs no expert: converted without them (DeepSeek-V3's are 60 GB in float64)
    light = dataclasses.replace(problem, moe=dataclasses.replace(problem.moe, w13=problem.moe.w13[:0],
                                                                 w2=problem.moe.w2[:0]))
    norm = lookup(NORMS, recipe.norm, "norm")
    ranked = []
    with torch.no_grad():
        for p in (light.converted(torch.float64), light.converted(problem.x.dtype)):
            h = attended(recipe, p.config, p, p.x, rows=rows, cache=p.cache)
            routed = norm(h, p.mlp_norm, p.config.eps).reshape(-1, p.x.shape[-1])
            ranked.append(reference_moe.ranked(recipe.router, moe, routed, p.moe.router_weight,
                                               p.moe.selection_bias))
    if ranked[0] is None:
        return decided
    rule = reference_moe.router(recipe.router)
    exact, deciding = rule.margins(ranked[0].double(), moe)
    low, _ = rule.margins(ranked[1].double(), moe, deciding)
    return clear_of_ties(exact, low).view(decided.shape)


def clear_of_ties(exact, low):
    """(T,) bool: rows where every deciding call's float64 margin (exact (T, n)) exceeds ROUTING_MARGIN x
    that call's error in the working dtype (low (T, n), the same pairs' margins), the error's root mean
    square over the rows. One row's own difference is one draw of that error, and some draws come out
    near zero by chance: weighed against its own, such a row counted as decided at a margin another
    bfloat16 computation (the implementation's) crosses. Session 18 on an H200: DeepSeek-V3's block
    failed its gradient check, dx 1.52 against a tolerance of 0.755, 341 of 512 rows decided."""
    # A call with nothing left out is infinite for every row (top_k of as many candidates): its error
    # is NaN, and isinf decides it.
    scale = (low - exact).square().mean(0).sqrt()
    return (torch.isinf(exact) | (exact > ROUTING_MARGIN * scale)).all(-1)


def depth_choice(recipe, w, x):
    """(chosen (B, n) token indices in order, their router scores (B, n) float32+): each sequence's
    top `depth_capacity` of its tokens by the router's score."""
    tokens = x.shape[1]
    wide = torch.promote_types(x.dtype, torch.float32)
    scores = x.to(wide) @ w.depth_router.to(wide)
    chosen = torch.sort(reference_moe.top_k(scores, max(1, int(tokens * recipe.depth_capacity)))[1], dim=-1).values
    return chosen, scores.gather(1, chosen)


def depth_routed(recipe, config, w, x, rows=None):
    """Mixture-of-depths: the chosen tokens go through the layer among themselves (causal in their
    order, RoPE at their own positions); a chosen token's change is scaled by sigmoid(its score), the
    others ride the residual unchanged."""
    chosen, scores = depth_choice(recipe, w, x)
    index = chosen[..., None].expand(-1, -1, x.shape[-1])
    routed = x.gather(1, index)
    changed = layer(recipe, config, w, routed, positions=chosen)
    gate = torch.sigmoid(scores).to(x.dtype)[..., None]
    out = x.scatter(1, index, routed + gate * (changed - routed))
    return out if rows is None else out[:, rows.to(x.device)]


def block(recipe, config, w, x, *, rows=None, cache=None):
    """The block's output (B, S or len(rows), dim)."""
    if recipe.depth_capacity is not None:
        return depth_routed(recipe, config, w, x, rows)
    return layer(recipe, config, w, x, rows=rows, cache=cache)


def prepare(variant, problem):
    """The reference as an implementation (the unfused floor the fused ones are timed against)."""
    return lambda: block(variant, problem.config, problem, problem.x, cache=problem.cache)
