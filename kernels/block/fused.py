"""fused: the block through each piece's fastest fused implementation from the catalog.

Attention goes through the attention family's implementations that serve blocks (those whose module
has `prepare_function`: SDPA, Flex, ours), an MoE through the moe family's (grouped_mm, ours): the
fastest at the block's piece shape (kernels/block/choice.py), named in the call's `backend`, which
check prints and the results record. The glue is torch's: the projections and the dense MLP cuBLAS
GEMMs, the norms torch's fused rms_norm and layer_norm kernels, RoPE and the MLP's activation one
compiled kernel each on CUDA (eager on the CPU, where the tests need no compiler). A peer swaps in
its own norms, activation and RoPE (`Glue`: kernels/block/liger.py), every other choice kept.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels.block.choice import fastest_piece
from variantbench.catalog import Unsupported, family, lookup


def _with_inner_choice(name, piece):
    """The piece's implementation with the choice it made inside where it names one (SDPA's backend,
    Flex's build): `sdpa` alone left unsaid which kernel ran DeepSeek-V3's latent attention when its
    cuDNN backward went wrong (session 17)."""
    inner = getattr(piece, "backend", None)
    if not inner or inner == name:
        return name
    return inner if inner.startswith(name) else f"{name} {inner}"


@dataclass(frozen=True)
class Split:
    """How the block is split over ranks (kernels/block/parallel.py): `gather` turns this rank's
    tokens into every rank's before a column-parallel product, `reduce` sums the ranks' partial
    outputs after a row-parallel one, into this rank's tokens; `token_share` is every rank's tokens
    over this rank's; `agree` sums a list of candidate times over the ranks, so every rank picks the
    same piece. Alone on one device, all are the identity."""

    gather: Callable
    reduce: Callable
    token_share: int = 1
    agree: Callable = lambda times: times
    # Overlapped splits fuse a collective with the products beside it (kernels/block/parallel.py):
    # gather_products(h, weights) -> [gather(h) @ w.T for each w]; product_reduce(a, w) -> reduce(a @ w.T).
    gather_products: Callable | None = None
    product_reduce: Callable | None = None

    def products(self, h, weights):
        """gather(h) @ w.T for each weight: every rank's tokens through this rank's column shards."""
        if self.gather_products is not None:
            return self.gather_products(h, weights)
        gathered = self.gather(h)
        return [gathered @ w.t() for w in weights]

    def reduced_product(self, a, w):
        """reduce(a @ w.T): a row-parallel product's partial sums, summed into this rank's tokens."""
        if self.product_reduce is not None:
            return self.product_reduce(a, w)
        return self.reduce(a @ w.t())


ALONE = Split(gather=lambda t: t, reduce=lambda t: t)


def l2_normed(x, eps=1e-6):
    """x / |x| along the last dim, eps inside the root (as fla's l2norm and the reference)."""
    return (x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)).contiguous()


def _compiled(function, device):
    return torch.compile(function, dynamic=False) if device.type == "cuda" else function


def _rotate(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)  # the rotate-half layout: RoPE'd head dims are even
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def rope_tables(positions, head_dim, theta, dtype):
    """(cos, sin), each (S, D/2) in dtype, of the rotate-half RoPE at these positions."""
    half = head_dim // 2
    freqs = theta ** (-torch.arange(half, device=positions.device, dtype=torch.float64) / half)
    angles = positions.to(torch.float64)[:, None] * freqs
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _swiglu(h):
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


def _geglu(h):
    gate, up = h.chunk(2, dim=-1)
    return F.gelu(gate, approximate="tanh") * up


ACTIVATIONS = {"swiglu": _swiglu, "geglu": _geglu, "gelu": F.gelu}


# (weight, eps) -> the norm as a function of x; Gemma scales by 1 + w (added in the call, so a trained
# block's weight gradient flows through it every step), as its own code does, in float32.
NORMS = {
    "rms": lambda w, eps: lambda x: F.rms_norm(x, x.shape[-1:], w, eps),
    # Gemma scales in float32 (1 + w rounded to bfloat16 would be off by up to 2^-8, four norms a block)
    "gemma_rms": lambda w, eps: lambda x: (F.rms_norm(x.float(), x.shape[-1:], None, eps) * (1 + w.float())).to(x.dtype),
    "layer": lambda w, eps: lambda x: F.layer_norm(x, x.shape[-1:], w, None, eps),
}


def _norm(kind, weight, eps):
    return lookup(NORMS, kind, "norm")(weight, eps)


def _rope(device):
    rotate = _compiled(_rotate, device)
    return lambda q, k, cos, sin: (rotate(q, cos, sin), rotate(k, cos, sin))


@dataclass(frozen=True)
class Glue:
    """The block's glue as factories: norm(kind, weight, eps) -> x -> normed x; activation(mlp, device)
    -> the MLP's activation of its up projection (gate then up); rope(device) -> (q, k, cos, sin) ->
    (q, k) rotated; tables(positions, head_dim, theta, dtype) -> the (cos, sin) that rope reads. A piece
    with a `backend` attribute is named in the call's backend by its role (fused's own carry none)."""

    norm: Callable = _norm
    activation: Callable = lambda mlp, device: _compiled(lookup(ACTIVATIONS, mlp, "MLP"), device)
    rope: Callable = _rope
    tables: Callable = rope_tables


FUSED = Glue()


def pieces(x, attn_norm, mlp_norm, project, position, cached, attend, output, mlp):
    """{piece: a call running that piece alone}, each on the inputs it sees in the block (from one
    pass here): what the composition overhead (the block's time over their sum) is measured against.
    A sandwich's post norms are timed with the piece they follow."""
    with torch.no_grad():
        h = attn_norm(x)
        q, k, v = project(h)
        q, k = position(q, k)
        k, v = cached(k, v)
        attended = attend(q, k, v)
        mid = x + output(attended)
        normed = mlp_norm(mid)
    return {
        "norms": lambda: (attn_norm(x), mlp_norm(mid)),
        "projections": lambda: (project(h), output(attended)),
        "positions": lambda: position(q, k),
        "attention": lambda: attend(q, k, v),
        "mlp": lambda: mlp(normed),
    }


def prepare(variant, problem):
    return build(variant, problem, ALONE)


def build(variant, problem, split: Split, glue: Glue = FUSED):
    """The block's call; `problem` is this rank's share where `split` splits it (its heads, its
    slice of the MLP, its tokens); `glue` makes its norms, activation and RoPE."""
    from variantbench.block_shapes import PieceAttentionShape
    from variantbench.catalog.attention import make_problem as attention_problem
    from variantbench.shapes import LinearShape, MLAShape, MoEShape

    p, config = problem, problem.config
    device, dtype = p.x.device, p.x.dtype
    batch, total, dim = p.x.shape
    total *= split.token_share  # attention, RoPE and the MLP see every rank's tokens
    depth = variant.depth_capacity is not None
    if depth and split is not ALONE:
        raise Unsupported("mixture-of-depths picks tokens per sequence; it is not split over ranks here")
    # The layer's own tokens: mixture-of-depths runs it over each sequence's chosen ones alone.
    tokens = max(1, int(total * variant.depth_capacity)) if depth else total
    trained = p.x.requires_grad
    # decode: the cache's length (the new token's key goes to its last position); prefill: the tokens
    kv_len = (p.k_cache.shape[2] if p.k_cache is not None else
              p.latent_cache.shape[1] if p.latent_cache is not None else tokens)
    start = kv_len - tokens
    heads, kv_heads, head_dim = config.n_heads, config.n_kv_heads, config.head_dim
    piece_shape = PieceAttentionShape("block-attention", config.name, batch, tokens, kv_len, device.type,
                                      heads=config.attention)
    m, lin = config.mla_config, config.linear_config
    agree = None if split is ALONE else split.agree  # alone, the machine's choice is kept (choice.py)
    if lin is not None:
        decode = p.delta_state is not None  # a step from the state: attend(..., state) -> (output, new state)
        linear_shape = LinearShape("block-linear", config.linear, batch, tokens, device=device.type, decode=decode)
        q0 = p.linear
        attend, attention_name = fastest_piece("linear", variant.attention, linear_shape, q0,
                                               tuple(q0.inputs().values()), trained, agree)
    elif m is None:
        piece = attention_problem(variant.attention, piece_shape, device=device, dtype=dtype, seed=p.seed,
                                  requires_grad=trained)
        attend, attention_name = fastest_piece("attention", variant.attention, piece_shape, piece,
                                               (piece.q, piece.k, piece.v), trained, agree)
    else:
        latent_shape = MLAShape("block-mla", config.mla, batch, tokens, kv_len, device=device.type)
        attend, attention_name = fastest_piece("mla", variant.attention, latent_shape, p.mla,
                                               (p.mla.q_nope, p.mla.q_pe, p.mla.cache), trained, agree)
    if p.moe is not None:
        moe_shape = MoEShape("block-moe", config.moe, batch * tokens, device=device.type)
        moe_layer, mlp_name = fastest_piece("moe", family("moe").variant(variant.router), moe_shape, p.moe,
                                            (p.moe.x,), trained, agree)
    glued = {}  # role -> the name of a piece the glue swapped in

    def made(role, piece):
        glued.update({role: piece.backend} if hasattr(piece, "backend") else {})
        return piece

    norm = lambda kind, weight: made("norms", glue.norm(kind, weight, config.eps))  # noqa: E731
    if p.moe is None:
        activation, mlp_name = made("activation", glue.activation(variant.mlp, device)), "cublas"
    attn_norm, mlp_norm = norm(variant.norm, p.attn_norm), norm(variant.norm, p.mlp_norm)
    sandwich = variant.residual == "sandwich"
    if sandwich:
        post_attn, post_mlp = norm(variant.norm, p.post_attn_norm), norm(variant.norm, p.post_mlp_norm)
    if variant.qk_norm:
        q_norm, k_norm = norm("rms", p.q_norm), norm("rms", p.k_norm)
    rope = made("rope", glue.rope(device)) if variant.rope or m is not None else None  # MLA: its RoPE parts, always
    rope_dim = head_dim if m is None else m.qk_rope_dim
    cos, sin = glue.tables(torch.arange(start, start + total, device=device), rope_dim, config.rope_theta, dtype)
    if m is not None:
        q_a_norm, kv_a_norm = norm("rms", p.q_a_norm), norm("rms", p.kv_a_norm)
    if lin is not None:
        out_norm = norm("rms", p.out_norm)

    def project(h):  # h: this rank's tokens; q, k, v: every rank's tokens, this rank's heads
        q, k, v = split.products(h, (p.wq, p.wk, p.wv))
        return (q.view(batch, tokens, heads, head_dim).transpose(1, 2),
                k.view(batch, tokens, kv_heads, head_dim).transpose(1, 2),
                v.view(batch, tokens, kv_heads, head_dim).transpose(1, 2))

    def position(q, k, cos, sin):
        if variant.qk_norm:
            q, k = q_norm(q), k_norm(k)
        if variant.rope:
            q, k = rope(q, k, cos, sin)
        return q, k

    def cached(k, v):
        if p.k_cache is None:
            return k, v
        p.k_cache[:, :, start:] = k  # decode: the new token's key and value into the cache, in place
        p.v_cache[:, :, start:] = v
        return p.k_cache, p.v_cache

    def output(attended):
        out = split.reduced_product(attended.transpose(1, 2).reshape(batch, tokens, heads * head_dim), p.wo)
        return post_attn(out) if sandwich else out

    def mlp(normed):  # normed: this rank's tokens
        if p.moe is not None:
            out = split.reduce(moe_layer(split.gather(normed).reshape(-1, dim)).view(batch, tokens, dim))
        else:
            up, = split.products(normed, (p.w13,))
            out = split.reduced_product(activation(up), p.w2)
        return post_mlp(out) if sandwich else out

    def grouped(h, cos, sin):
        q, k, v = project(h)
        q, k = position(q, k, cos, sin)
        return output(attend(q, *cached(k, v)))

    def latent(h, cos, sin):
        """DeepSeek-V3's attention (reference/block.py's latent_rows): the query through its bottleneck,
        each token's cache row (normed latent, RoPE key), through the mla family's chosen call."""
        h = split.gather(h)
        q = (q_a_norm(h @ p.w_dq.t()) @ p.w_uq.t()).view(batch, tokens, heads, m.qk_dim).transpose(1, 2)
        kv = h @ p.w_dkv.t()
        q_pe, k_pe = rope(q[..., m.qk_nope_dim:], kv[:, None, :, m.kv_lora_rank:], cos, sin)
        q_nope, q_pe = q[..., :m.qk_nope_dim].contiguous(), q_pe.contiguous()
        rows = torch.cat([kv_a_norm(kv[..., :m.kv_lora_rank]), k_pe[:, 0]], dim=-1)
        if p.latent_cache is not None:  # decode: the new token's row into the cache, in place
            p.latent_cache[:, start:] = rows
            rows = p.latent_cache
        return output(attend(q_nope, q_pe, rows))

    def delta(h, cos, sin):
        """Qwen3-Next's gated DeltaNet (reference/block.py's delta_inputs and delta_attention), the
        rule itself through the linear family's chosen call."""
        key, value = lin.n_qk_heads * lin.k_dim, lin.n_v_heads * lin.v_dim
        h = split.gather(h)
        q, k, v, z = (h @ p.w_qkvz.t()).split([key, key, value, value], dim=-1)
        b, a = (h @ p.w_ba.t()).split([lin.n_v_heads, lin.n_v_heads], dim=-1)
        channels = torch.cat([q, k, v], dim=-1).transpose(1, 2)
        # zeros before a sequence's start; at decode the convolution state, the channels of the tokens before
        before = (F.pad(channels, (config.conv - 1, 0)) if p.conv_state is None
                  else torch.cat([p.conv_state.transpose(1, 2), channels], dim=-1))
        mixed = F.conv1d(before, p.conv_weight[:, None], groups=2 * key + value)
        q, k, v = F.silu(mixed.transpose(1, 2)).split([key, key, value], dim=-1)
        g = -p.a_log.float().exp() * F.softplus(a.float() + p.dt_bias.float())
        out = attend(l2_normed(q.reshape(batch, tokens, lin.n_qk_heads, lin.k_dim)),
                     l2_normed(k.reshape(batch, tokens, lin.n_qk_heads, lin.k_dim)),
                     v.reshape(batch, tokens, lin.n_v_heads, lin.v_dim).contiguous(), g.contiguous(),
                     torch.sigmoid(b).contiguous(), *([p.delta_state] if decode else []))
        out = out[0] if decode else out  # the new state goes with the output; the problem's stays for the next call
        gated = out_norm(out) * F.silu(z.reshape(batch, tokens, lin.n_v_heads, lin.v_dim))
        out = split.reduced_product(gated.reshape(batch, tokens, value), p.wo)
        return post_attn(out) if sandwich else out

    attention_part = delta if lin is not None else grouped if m is None else latent

    def layer(x, cos, sin):  # each part gathers every rank's tokens where the split shares them out
        h = x + attention_part(attn_norm(x), cos, sin)
        return h + mlp(mlp_norm(h))

    def route(x):
        """(chosen (B, n) in order, their router scores): each sequence's top tokens (reference/block.py)."""
        scores = x.float() @ p.depth_router.float()
        chosen = torch.topk(scores, tokens, dim=-1).indices.sort(-1).values
        return chosen, scores.gather(1, chosen)

    def call():
        if not depth:
            return layer(p.x, cos, sin)
        chosen, scores = route(p.x)
        index = chosen[..., None].expand(-1, -1, dim)
        routed = p.x.gather(1, index)
        changed = layer(routed, cos[chosen][:, None], sin[chosen][:, None])  # RoPE at each token's own position
        gate = torch.sigmoid(scores).to(dtype)[..., None]
        return p.x.scatter(1, index, routed + gate * (changed - routed))

    call()
    call.backend = ", ".join([f"attention {_with_inner_choice(attention_name, attend)}", f"mlp {mlp_name}",
                              *map(" ".join, glued.items())])
    if split is not ALONE:  # a split block's pieces are its collectives (BlockParallel)
        return call
    if attention_part is not grouped:  # latent or linear: its projections, the rule and the output as one piece
        with torch.no_grad():
            mid = p.x + attention_part(attn_norm(p.x), cos, sin)
            normed = mlp_norm(mid)
        call.pieces = {"norms": lambda: (attn_norm(p.x), mlp_norm(mid)),
                       "attention": lambda: attention_part(attn_norm(p.x), cos, sin), "mlp": lambda: mlp(normed)}
        return call
    if depth:
        chosen, _ = route(p.x)
        x, tables = p.x.gather(1, chosen[..., None].expand(-1, -1, dim)), (cos[chosen][:, None], sin[chosen][:, None])
    else:
        x, tables = p.x, (cos, sin)
    call.pieces = pieces(x, attn_norm, mlp_norm, project, lambda q, k: position(q, k, *tables), cached, attend, output,
                         mlp)
    if depth:
        call.pieces["routing"] = lambda: route(p.x)
    return call
