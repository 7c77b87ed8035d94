"""The block family on the CPU: each recipe's reference against a layer written here independently
(complex-number RoPE, SDPA or explicit softmax attention, a per-token loop over experts), decode
against prefill, mixture-of-depths' routing, the fused and compiled blocks against the reference, the
work model, and the recipes' own rules."""

import math

import pytest
import torch
import torch.nn.functional as F

from reference import block as reference_block
from variantbench import cases, check_workers
from variantbench.block_shapes import BlockShape
from variantbench.catalog import family
from variantbench.catalog.attention import AttentionVariant
from variantbench.catalog.block import BlockVariant

BLOCK = family("block")
PREFILL = BlockShape("t-prefill", batch=2, q_len=24, kv_len=24, size="tiny", device="cpu")


def problem_of(name, shape=PREFILL, seed=1):
    return BLOCK.make_problem(BLOCK.variant(name), shape, device="cpu", dtype=torch.float64, seed=seed)


def rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotated(x, theta):
    """RoPE as a complex rotation: the first half of the head dim is the real part, the second the
    imaginary part (the rotate-half layout), position p turns pair i by p * theta^(-i / half)."""
    half = x.shape[-1] // 2
    turns = torch.arange(x.shape[2], dtype=torch.float64)[:, None] * theta ** (-torch.arange(half, dtype=torch.float64) / half)
    z = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(turns), turns)
    return torch.cat([z.real, z.imag], dim=-1)


def independent_layer(recipe, p, x):
    """The recipe's layer written apart from reference/block.py, for pre-norm and sandwich RMS blocks."""
    c = p.config
    scale = (lambda w: 1 + w) if recipe.norm == "gemma_rms" else (lambda w: w)
    norm = lambda t, w: rms(t, scale(w), c.eps)  # noqa: E731
    b, s, _ = x.shape
    h = norm(x, p.attn_norm)
    heads = lambda t, n: t.view(b, s, n, c.head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = heads(h @ p.wq.T, c.n_heads), heads(h @ p.wk.T, c.n_kv_heads), heads(h @ p.wv.T, c.n_kv_heads)
    if recipe.qk_norm:
        q, k = rms(q, p.q_norm, c.eps), rms(k, p.k_norm, c.eps)
    q, k = rotated(q, c.rope_theta), rotated(k, c.rope_theta)
    group = c.n_heads // c.n_kv_heads
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_dim)
    if recipe.attention.softcap:
        scores = recipe.attention.softcap * torch.tanh(scores / recipe.attention.softcap)
    i, j = torch.arange(s)[:, None], torch.arange(s)[None, :]
    visible = j <= i
    if recipe.attention.window:
        visible &= i - j < recipe.attention.window
    attended = torch.softmax(scores.masked_fill(~visible, -math.inf), -1) @ v
    out = attended.transpose(1, 2).reshape(b, s, -1) @ p.wo.T
    if recipe.residual == "sandwich":
        out = norm(out, p.post_attn_norm)
    h = x + out
    g = norm(h, p.mlp_norm)
    if recipe.mlp == "moe":
        out = torch.stack([experts_of_token(p.moe, t) for t in g.reshape(-1, g.shape[-1])]).view(g.shape)
    else:
        gate, up = (g @ p.w13.T).chunk(2, -1)
        act = F.gelu(gate, approximate="tanh") if recipe.mlp == "geglu" else gate * torch.sigmoid(gate)
        out = (act * up) @ p.w2.T
    if recipe.residual == "sandwich":
        out = norm(out, p.post_mlp_norm)
    return h + out


def experts_of_token(moe, t):
    """Mixtral's routing for one token: softmax over every expert, its top-k renormalised; in float32,
    as models route (and reference/moe.py does, whatever the experts' dtype)."""
    probs = torch.softmax(t.float() @ moe.router_weight.float().T, -1)
    top = torch.topk(probs, moe.config.top_k)
    out = torch.zeros_like(t)
    for weight, e in zip((top.values / top.values.sum()).to(t.dtype), top.indices):
        gate, up = (t @ moe.w13[e].T).chunk(2, -1)
        out += weight * ((gate * torch.sigmoid(gate) * up) @ moe.w2[e].T)
    if moe.shared13 is not None:
        gate, up = (t @ moe.shared13.T).chunk(2, -1)
        out += (gate * torch.sigmoid(gate) * up) @ moe.shared2.T
    return out


@pytest.mark.parametrize("name", ["llama-3-8b", "gemma-2-9b-local", "gemma-2-9b-global", "qwen3-30b-a3b",
                                  "mixtral-8x7b"])
def test_each_recipes_reference_is_the_layer_written_independently(name):
    recipe = BLOCK.variant(name)
    if recipe.attention.window:
        recipe = small_window(recipe)
    p = problem_of(name)
    got = reference_block.block(recipe, p.config, p, p.x)
    # routing runs in float32 in both (as models route): its weights agree to float32's rounding only
    close = 1e-6 if recipe.mlp == "moe" else 1e-9
    torch.testing.assert_close(got, independent_layer(recipe, p, p.x), rtol=close, atol=close)


def test_the_vit_block_is_layer_norm_bidirectional_attention_and_a_gelu_mlp():
    recipe, p = BLOCK.variant("vit-l16"), problem_of("vit-l16")
    c = p.config
    ln = lambda t, w: F.layer_norm(t, t.shape[-1:], w, None, c.eps)  # noqa: E731
    b, s, _ = p.x.shape
    heads = lambda t: t.view(b, s, c.n_heads, c.head_dim).transpose(1, 2)  # noqa: E731
    h = ln(p.x, p.attn_norm)
    attended = F.scaled_dot_product_attention(heads(h @ p.wq.T), heads(h @ p.wk.T), heads(h @ p.wv.T))
    h = p.x + attended.transpose(1, 2).reshape(b, s, -1) @ p.wo.T
    expected = h + F.gelu(ln(h, p.mlp_norm) @ p.w13.T) @ p.w2.T
    torch.testing.assert_close(reference_block.block(recipe, c, p, p.x), expected, rtol=1e-9, atol=1e-9)


def small_window(recipe):
    """The recipe with a 6-key window (its own 4096 cuts nothing at 24 tokens)."""
    return BlockVariant(recipe.name, recipe.model, AttentionVariant("window_6", window=6, softcap=recipe.attention.softcap),
                        norm=recipe.norm, mlp=recipe.mlp, router=recipe.router, residual=recipe.residual)


@pytest.mark.parametrize("name", ["llama-3-8b", "gemma-2-9b-local", "mixtral-8x7b", "vit-l16"])
def test_decode_over_a_cache_of_the_earlier_tokens_is_the_last_row_of_prefill(name):
    recipe, p = BLOCK.variant(name), problem_of(name)
    if recipe.attention.window:
        recipe = small_window(recipe)
    c = p.config
    prefill = reference_block.block(recipe, c, p, p.x)
    norm = reference_block.NORMS[recipe.norm]
    _, k, v = reference_block.project_qkv(recipe, c, p, norm(p.x, p.attn_norm, c.eps), torch.arange(PREFILL.q_len))
    got = reference_block.block(recipe, c, p, p.x[:, -1:], cache=(k, v))
    torch.testing.assert_close(got[:, 0], prefill[:, -1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["llama-3-8b", "gemma-2-9b-local"])
def test_sampled_rows_are_those_rows_of_the_whole_block(name):
    """The check compares sampled positions at large shapes: the reference on those rows alone must
    place them where they are (a windowed mask once read them as the last rows of the sequence)."""
    recipe, p = small_window(BLOCK.variant(name)) if name != "llama-3-8b" else BLOCK.variant(name), problem_of(name)
    rows = torch.tensor([0, 3, 11, 17])
    whole = reference_block.block(recipe, p.config, p, p.x)
    torch.testing.assert_close(reference_block.block(recipe, p.config, p, p.x, rows=rows), whole[:, rows])


def test_mixture_of_depths_changes_only_the_chosen_tokens_by_their_gated_layer_output():
    recipe = BlockVariant("depth", "llama-3-8b", AttentionVariant("causal_gqa"), depth_capacity=0.25)
    p = problem_of("llama-3-8b-depth")
    out = reference_block.block(recipe, p.config, p, p.x)
    chosen, scores = reference_block.depth_choice(recipe, p, p.x)
    assert chosen.shape == (2, 6)
    changed = (out != p.x).any(-1)
    assert torch.equal(changed, torch.zeros_like(changed).scatter_(1, chosen, True))
    b = 0
    routed = p.x[b:b + 1, chosen[b]]
    layer = reference_block.layer(recipe, p.config, p, routed, positions=chosen[b:b + 1])
    gate = torch.sigmoid(scores[b])[:, None]
    torch.testing.assert_close(out[b, chosen[b]], routed[0] + gate * (layer[0] - routed[0]))


def test_mixture_of_depths_rope_uses_each_chosen_tokens_own_position():
    """Routed as a short sequence, a chosen token keeps its place in the whole one: its rotation is
    by its own position, not its index among the chosen."""
    recipe, p = BLOCK.variant("llama-3-8b-depth"), problem_of("llama-3-8b-depth")
    chosen, _ = reference_block.depth_choice(recipe, p, p.x)
    assert not torch.equal(chosen, torch.arange(chosen.shape[1]).expand_as(chosen))  # not simply the first ones
    routed = p.x.gather(1, chosen[..., None].expand(-1, -1, p.x.shape[-1]))
    at_own = reference_block.layer(recipe, p.config, p, routed, positions=chosen)
    at_index = reference_block.layer(recipe, p.config, p, routed)
    assert not torch.allclose(at_own, at_index)


@pytest.mark.parametrize("name,shape", [("llama-3-8b", "tiny-prefill-b2-s48"), ("gemma-2-9b-local", "tiny-decode-b2-kv40"),
                                        ("qwen3-30b-a3b", "tiny-prefill-b2-s48"),
                                        ("llama-3-8b-depth", "tiny-prefill-b2-s48"),
                                        ("deepseek-v3", "tiny-prefill-b2-s48"), ("deepseek-v3", "tiny-decode-b2-kv40")])
def test_the_fused_block_matches_the_reference_and_names_its_pieces(name, shape):
    result = check_workers.check_one(cases.resolve("block", name, "fused", shape, "cpu"))
    assert result.status == "ok", result.line
    assert "via attention " in result.line and ", mlp " in result.line


def test_the_compiled_block_matches_the_reference_with_gradients():
    result = check_workers.check_one(cases.resolve("block", "vit-l16", "compiled", "tiny-prefill-b2-s48", "cpu"))
    assert result.status == "ok", result.line
    assert "gradients dx" in result.line and "dw13" in result.line


def test_a_compiled_moe_block_breaks_its_graph_only_at_the_experts():
    """An MoE block compiles with symbolic sizes; its sliding window mask named itself with an f-string
    then, which dynamo could not trace (BUILD_STRING): Mixtral's compiled block broke its graph in the
    mask before its experts, and on an H200 the host took 96% of its 43 ms a call (session 14)."""
    result = check_workers.check_one(cases.resolve("block", "mixtral-8x7b", "compiled", "tiny-prefill-b2-s48", "cpu"))
    assert result.status == "ok", result.line
    assert "(graph breaks: " in result.line and "reference/moe.py:" in result.line, result.line


def test_a_fused_block_fails_its_check_when_a_piece_is_wrong(monkeypatch):
    from kernels.block import fused

    monkeypatch.setitem(fused.ACTIVATIONS, "swiglu", lambda h: F.silu(h.chunk(2, -1)[0]))  # the up half dropped
    result = check_workers.check_one(cases.resolve("block", "llama-3-8b", "fused", "tiny-prefill-b2-s48", "cpu"))
    assert result.status == "mismatch", result.line


def test_the_work_model_counts_projections_attention_and_mlp():
    p = problem_of("llama-3-8b", PREFILL)
    c = p.config
    rows = 2 * 24
    pairs = 2 * 24 * 25 // 2
    expected = (2 * rows * c.dim * (2 * c.n_heads + 2 * c.n_kv_heads) * c.head_dim + 4 * c.n_heads * c.head_dim * pairs
                + 6 * rows * c.dim * c.ffn_dim)
    flops, nbytes = BLOCK.work(BLOCK.variant("llama-3-8b"), p)
    assert flops == expected
    assert nbytes == 8 * (sum(t.numel() for t in p.weights().values()) + 2 * p.x.numel())
    assert BLOCK.work(BLOCK.variant("llama-3-8b"), p, backward=True)[0] > 3 * flops


def test_the_work_model_reads_a_latent_attentions_up_projections():
    """DeepSeek-V3's up-projections live in its MLA piece's problem, not among the block's own weights:
    read once a call like every other weight (the experts' bytes are the moe family's)."""
    p = problem_of("deepseek-v3", PREFILL)
    variant = BLOCK.variant("deepseek-v3")
    moe = family("moe")
    _, mlp_bytes = moe.work(moe.variant(variant.router), p.moe)
    weights = sum(t.numel() for t in p.weights().values()) + p.mla.w_uk.numel() + p.mla.w_uv.numel()
    assert p.latent_cache is None and p.mla.w_uk.numel() > 0
    assert BLOCK.work(variant, p)[1] == mlp_bytes + 8 * (weights + 2 * p.x.numel())


def test_a_recipe_names_its_router_exactly_when_it_has_experts():
    with pytest.raises(ValueError, match="names its router"):
        BlockVariant("bad", "llama-3-8b", AttentionVariant("causal_gqa"), mlp="moe")
    with pytest.raises(ValueError, match="names its router"):
        BlockVariant("bad", "llama-3-8b", AttentionVariant("causal_gqa"), router="softmax_topk")


def test_an_unknown_residual_structure_fails_by_name():
    with pytest.raises(ValueError, match="unknown residual 'post'"):
        BlockVariant("odd", "llama-3-8b", AttentionVariant("causal_gqa"), residual="post")


@pytest.mark.parametrize("field,value", [("norm", "batch"), ("mlp", "relu2")])
def test_an_unknown_norm_or_mlp_fails_by_name_when_the_recipe_is_made(field, value):
    with pytest.raises(ValueError, match=f"unknown {field} '{value}'"):
        BlockVariant("odd", "llama-3-8b", AttentionVariant("causal_gqa"), **{field: value})


def test_tiny_configs_keep_the_models_structure():
    from variantbench.block_shapes import block_model

    for name, group in (("llama-3-8b", 4), ("qwen3-30b-a3b", 4), ("gemma-2-9b", 2), ("vit-l16", 1)):
        tiny = block_model(name).tiny()
        assert tiny.n_heads // tiny.n_kv_heads == group
    assert block_model("mixtral-8x7b").tiny().moe_config.dim == block_model("mixtral-8x7b").tiny().dim


def test_composition_overhead_is_the_block_over_the_sum_of_its_pieces(monkeypatch):
    from suite import bench_block

    _, call, _ = cases.prepare_checked(cases.resolve("block", "llama-3-8b", "fused", "tiny-prefill-b2-s48", "cpu"))
    assert set(call.pieces) == {"norms", "projections", "positions", "attention", "mlp"}
    for piece in call.pieces.values():
        piece()
    fixed = {"block": [6.0] * 3, "norms": [1.0] * 3, "projections": [1.0] * 3, "positions": [0.5] * 3,
             "attention": [1.5] * 3, "mlp": [1.0] * 3}
    monkeypatch.setattr(bench_block.timing, "interleaved_ms", lambda calls, device, rounds: {n: fixed[n] for n in calls})
    figures = bench_block.composition(call, torch.device("cpu"))
    assert figures["overhead"] == pytest.approx(6.0 / 5.0)
    assert figures["attention"] == 1.5


@pytest.mark.parametrize("name,implementation,shape", [
    ("llama-3-8b", "tensor_parallel", "tiny-prefill-b2-s48"), ("llama-3-8b", "sequence_parallel", "tiny-prefill-b2-s48"),
    ("qwen3-30b-a3b", "tensor_parallel", "tiny-prefill-b2-s48"),
    ("qwen3-30b-a3b", "sequence_parallel", "tiny-prefill-b2-s48"), ("gemma-2-9b-local", "tensor_parallel", "tiny-decode-b2-kv40"),
    ("llama-3-8b", "sequence_parallel_overlapped", "tiny-prefill-b2-s48"),
    ("qwen3-30b-a3b", "sequence_parallel_overlapped", "tiny-prefill-b2-s48")])
def test_a_block_split_over_two_gloo_ranks_is_the_unsplit_block(name, implementation, shape):
    result = check_workers.check_one(cases.resolve("block", name, implementation, shape, "cpu"))
    assert result.status == "ok", result.line
    assert "parallel over 2 ranks" in result.line


def test_a_rank_holding_the_wrong_share_fails_the_check(monkeypatch):
    from kernels.block import parallel

    real = parallel.share
    # rank 0 (this process) takes rank 1's heads and MLP slice: the sum counts those twice
    monkeypatch.setattr(parallel, "share", lambda problem, variant, rank, ranks, mode: real(problem, variant, 1, ranks, mode))
    case = cases.resolve("block", "llama-3-8b", "tensor_parallel", "tiny-prefill-b2-s48", "cpu")
    result = check_workers.check_one(case)
    assert result.status == "mismatch", result.line


def test_sequence_parallel_is_refused_where_the_tokens_do_not_split():
    from kernels.block.parallel import unsupported

    recipe = BLOCK.variant("llama-3-8b")
    odd = BlockShape("t-odd", batch=1, q_len=25, kv_len=25, size="tiny", device="cpu")
    assert "do not split over 2 ranks" in unsupported(recipe, odd, "sequence")
    assert unsupported(recipe, odd, "tensor") is None
    assert "mixture-of-depths" in unsupported(BLOCK.variant("llama-3-8b-depth"), PREFILL, "tensor")


def test_parallel_efficiency_and_the_collectives_share(monkeypatch):
    from suite import bench_block

    def split():
        return None

    def single():
        return None

    def collectives():
        return None

    split.collectives, split.ranks = collectives, 2
    fixed = {"single": [8.0] * 3, "split": [5.0] * 3, "collectives": [1.0] * 3}
    asked = []

    def interleaved_ms(calls, device, rounds, warmup, batch):
        asked.append((list(calls.values()), rounds, batch))
        return {name: fixed[name] for name in calls}

    monkeypatch.setattr(bench_block.timing, "interleaved_ms", interleaved_ms)
    figures = bench_block.parallel_figures(single, split, torch.device("cpu"))
    # medians of back-to-back batches of the three calls, in turns
    assert asked == [([single, split, collectives], bench_block.PARALLEL_ROUNDS, bench_block.PARALLEL_CALLS)]
    assert figures["efficiency"] == pytest.approx(8.0 / (2 * 5.0))
    assert figures["collectives_share"] == pytest.approx(0.2)


def test_the_budget_verdict_weighs_one_device_fused_implementations_only():
    from variantbench.budget import judged

    assert judged("block", "fused") and judged("block", "compiled") and judged("comms", "nccl")
    assert not judged("block", "tensor_parallel") and not judged("block", "reference")
    assert judged("attention", "an_old_kernel") and not judged("attention", "reference")


def test_the_latent_attention_block_is_deepseeks_layer_written_per_head():
    """DeepSeek-V3's attention written head by head: each head's key is its up-projected latent and
    the shared RoPE key, its value the latent up-projected again; the MoE after it is the reference's
    (checked on its own in tests/test_moe.py)."""
    recipe, p = BLOCK.variant("deepseek-v3"), problem_of("deepseek-v3")
    c, m = p.config, p.config.mla_config
    b, s, _ = p.x.shape
    h = rms(p.x, p.attn_norm, c.eps)
    q = (rms(h @ p.w_dq.T, p.q_a_norm, c.eps) @ p.w_uq.T).view(b, s, m.n_heads, m.qk_dim).transpose(1, 2)
    q_nope, q_pe = q[..., :m.qk_nope_dim], rotated(q[..., m.qk_nope_dim:], c.rope_theta)
    kv = h @ p.w_dkv.T
    latent = rms(kv[..., :m.kv_lora_rank], p.kv_a_norm, c.eps)
    k_pe = rotated(kv[:, None, :, m.kv_lora_rank:], c.rope_theta)[:, 0]
    visible = torch.ones(s, s, dtype=torch.bool).tril()
    heads = []
    for head in range(m.n_heads):
        k = torch.cat([latent @ p.mla.w_uk[head].T, k_pe], dim=-1)
        v = latent @ p.mla.w_uv[head].T
        scores = torch.cat([q_nope[:, head], q_pe[:, head]], -1) @ k.transpose(-1, -2) / math.sqrt(m.qk_dim)
        heads.append(torch.softmax(scores.masked_fill(~visible, -math.inf), -1) @ v)
    mid = p.x + torch.cat(heads, dim=-1) @ p.wo.T
    expected = mid + reference_block.mlp(recipe, c, p, rms(mid, p.mlp_norm, c.eps))
    torch.testing.assert_close(reference_block.block(recipe, c, p, p.x), expected, rtol=1e-6, atol=1e-6)


def test_latent_attention_decode_over_the_latent_cache_is_the_last_row_of_prefill():
    recipe, p = BLOCK.variant("deepseek-v3"), problem_of("deepseek-v3")
    c = p.config
    prefill = reference_block.block(recipe, c, p, p.x)
    _, _, rows = reference_block.latent_rows(c, p, rms(p.x, p.attn_norm, c.eps), torch.arange(PREFILL.q_len))
    got = reference_block.block(recipe, c, p, p.x[:, -1:], cache=rows)
    torch.testing.assert_close(got[:, 0], prefill[:, -1], rtol=1e-6, atol=1e-6)


def test_the_gated_deltanet_block_is_qwen3_nexts_layer_with_the_token_by_token_rule():
    """Qwen3-Next's linear-attention layer written apart: the short convolution tap by tap, the gated
    delta rule by its float64 recurrence (the linear family's oracle), the gated per-head norm."""
    from reference.linear_attention import recurrence

    recipe, p = BLOCK.variant("qwen3-next"), problem_of("qwen3-next")
    c, lin = p.config, p.config.linear_config
    b, s, _ = p.x.shape
    h = rms(p.x, p.attn_norm, c.eps)
    key, value = lin.n_qk_heads * lin.k_dim, lin.n_v_heads * lin.v_dim
    q, k, v, z = (h @ p.w_qkvz.T).split([key, key, value, value], -1)
    beta_in, a = (h @ p.w_ba.T).split([lin.n_v_heads] * 2, -1)
    mixed = torch.cat([q, k, v], -1)
    conv = sum(p.conv_weight[:, tap] * F.pad(mixed, (0, 0, c.conv - 1 - tap, 0))[:, :s] for tap in range(c.conv))
    q, k, v = F.silu(conv).split([key, key, value], -1)
    unit = lambda t, n, d: t.view(b, s, n, d) / torch.sqrt((t.view(b, s, n, d) ** 2).sum(-1, keepdim=True) + 1e-6)  # noqa: E731
    g = -torch.exp(p.a_log) * F.softplus(a + p.dt_bias)
    out = recurrence(unit(q, lin.n_qk_heads, lin.k_dim), unit(k, lin.n_qk_heads, lin.k_dim),
                     v.view(b, s, lin.n_v_heads, lin.v_dim), g, torch.sigmoid(beta_in), scale=lin.k_dim ** -0.5)
    gated = rms(out, p.out_norm, c.eps) * F.silu(z.view(b, s, lin.n_v_heads, lin.v_dim))
    mid = p.x + gated.reshape(b, s, -1) @ p.wo.T
    expected = mid + reference_block.mlp(recipe, c, p, rms(mid, p.mlp_norm, c.eps))
    torch.testing.assert_close(reference_block.block(recipe, c, p, p.x), expected, rtol=1e-6, atol=1e-6)


def test_the_fused_gated_deltanet_block_runs_our_kernel_on_the_cpu():
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("our Triton kernels run on the CPU under TRITON_INTERPRET=1 (fla-core is GPU-only)")
    result = check_workers.check_one(cases.resolve("block", "qwen3-next", "fused", "tiny-prefill-b2-s48", "cpu"))
    assert result.status == "ok", result.line
    assert "via attention triton" in result.line


@pytest.mark.parametrize("name", ["deepseek-v3", "mixtral-8x7b"])
def test_every_fused_block_has_composition_pieces(name):
    _, call, _ = cases.prepare_checked(cases.resolve("block", name, "fused", "tiny-prefill-b2-s48", "cpu"))
    assert {"norms", "attention", "mlp"} <= set(call.pieces)
    for piece in call.pieces.values():
        piece()


@pytest.mark.parametrize("name", ["deepseek-v3", "llama-3-8b"])
def test_fused_decode_writes_only_the_new_tokens_position_and_matches_the_untouched_cache(name):
    """The fused decode writes the new token's key (or latent row) into the cache in place. It must
    write only the last position: a latent block once broadcast its row over the whole cache, and the
    check, reading the cache after the call, agreed with it."""
    from kernels.block import fused

    recipe = BLOCK.variant(name)
    shape = BLOCK.shape("tiny-decode-b2-kv40")
    p = BLOCK.make_problem(recipe, shape, device="cpu", dtype=torch.float32, seed=5)
    pristine = p.converted(torch.float64)  # copies, caches included, before anything writes
    out = fused.prepare(recipe, p)()
    for name, now in p.inputs().items():
        if name.endswith("cache"):
            was = getattr(pristine, name).float()
            written = now[:, :, -1] if name != "latent_cache" else now[:, -1]
            kept = (now[:, :, :-1], was[:, :, :-1]) if name != "latent_cache" else (now[:, :-1], was[:, :-1])
            assert torch.equal(*kept), name
            assert not torch.equal(written, (was[:, :, -1] if name != "latent_cache" else was[:, -1])), name
    expected = reference_block.block(recipe, pristine.config, pristine, pristine.x, cache=pristine.cache)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


def test_a_piece_is_chosen_by_the_times_every_rank_agrees_on():
    """Split blocks sum each candidate's time over the ranks (Split.agree) before choosing, so every
    rank runs one backend: a candidate that any rank could not run (inf) is chosen by none."""
    from kernels.block.fused import fastest_piece
    from variantbench.block_shapes import PieceAttentionShape
    from variantbench.catalog.attention import make_problem as attention_problem

    variant = BLOCK.variant("llama-3-8b").attention
    shape = PieceAttentionShape("t", "tiny", 2, 16, 16, "cpu", heads=problem_of("llama-3-8b").config.attention)
    piece = attention_problem(variant, shape, device="cpu", dtype=torch.float32, seed=1)
    inputs = (piece.q, piece.k, piece.v)
    _, alone = fastest_piece("attention", variant, shape, piece, inputs, False)
    assert alone == "sdpa"  # on a CPU the first that runs
    vetoed = lambda times: [float("inf") if t == min(times) else t for t in times]  # noqa: E731 - a rank refused it
    with pytest.raises(Exception, match="no fused attention implementation serves"):
        fastest_piece("attention", variant, shape, piece, inputs, False, vetoed)


def test_an_unknown_split_fails_by_name():
    from kernels.block.parallel import split_of

    with pytest.raises(ValueError, match="unknown split 'pipeline'"):
        split_of("pipeline", 2)


def test_the_default_tier_has_one_block_the_baseline_recipe_and_a_named_recipe_runs_at_any_tier():
    """Issue 16: one block shape in the default tier, within its minutes: the family baseline's recipe
    through fused, forward and forward+backward; the other recipes in the full tier or where named."""
    default = [c for c in cases.iter_cases("block", "cuda", tier="default") if not isinstance(c, tuple)]
    assert sorted((c.variant.name, c.implementation.name, c.shape.name) for c in default) == [
        ("llama-3-8b", "fused", "prefill-b4-s4k"), ("llama-3-8b", "reference", "prefill-b4-s4k")]
    full = {c.variant.name for c in cases.iter_cases("block", "cuda", tier="full") if not isinstance(c, tuple)}
    assert {"llama-3-8b", "qwen3-30b-a3b", "deepseek-v3", "vit-l16"} <= full
    named = [c for c in cases.iter_cases("block", "cuda", variants=["qwen3-30b-a3b"], tier="default")
             if not isinstance(c, tuple)]
    assert {c.variant.name for c in named} == {"qwen3-30b-a3b"} and named
