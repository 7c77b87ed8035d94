"""The mla family's backward on the CPU: the reference's gradients at prefill against a layer
decompressed by hand here (per-head keys and values from the latent, causal softmax attention), SDPA's
and compiled's through the suite's gradient check, decode and our decode kernel refused with their
reasons, Flex refused on the CPU only, DeepSeek-V3's block trained through fused with its latent's up-
projections among its gradients, the work model, and the default tier left without MLA backwards."""

import dataclasses

import pytest
import torch

from kernels.mla import sdpa
from reference import mla as reference
from variantbench import cases, check_workers
from variantbench.catalog import family
from variantbench.shapes import MLAShape

MLA, BLOCK = family("mla"), family("block")
VARIANT = MLA.variant("mla")
PREFILL, DECODE = MLA.shape("tiny-mla-s80"), MLA.shape("tiny-mla-decode-kv200")
GRADIENTS = ("dq_nope", "dq_pe", "dcache", "dw_uk", "dw_uv")


def problem_at(q_len, kv_len, dtype=torch.float64, seed=3):
    shape = MLAShape("t", "tiny-mla", batch=2, q_len=q_len, kv_len=kv_len, device="cpu")
    return MLA.make_problem(VARIANT, shape, device="cpu", dtype=dtype, seed=seed, requires_grad=True)


def by_hand(p):
    """DeepSeek-V3's attention written per head: head h's keys [latent W_uk[h]^T ; k_pe] (the one RoPE
    key of each token, every head's), its values latent W_uv[h]^T, causal softmax over them."""
    rank = p.config.kv_lora_rank
    latent, k_pe = p.cache[..., :rank], p.cache[..., rank:]
    visible = torch.ones(p.q_len, p.kv_len, dtype=torch.bool).tril(p.kv_len - p.q_len)
    heads = []
    for h in range(p.config.n_heads):
        k = torch.cat([latent @ p.w_uk[h].T, k_pe], dim=-1)  # (B, Skv, qk_nope + qk_rope)
        v = latent @ p.w_uv[h].T
        q = torch.cat([p.q_nope[:, h], p.q_pe[:, h]], dim=-1)
        scores = (q @ k.transpose(1, 2) * p.scale).masked_fill(~visible, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v)
    return torch.stack(heads, dim=1)


def gradients(layer, p):
    """{name: gradient} of layer(p) under a seeded random output gradient; the cache's split into its
    latent and RoPE-key halves. An input the layer cut from its graph gets zeros."""
    out = layer(p)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype)
    got = torch.autograd.grad(out, p.grad_inputs(), grad, allow_unused=True, materialize_grads=True)
    named = dict(zip(["q_nope", "q_pe", "cache", *p.weights()], got))
    rank = p.config.kv_lora_rank
    cache = named.pop("cache")
    return {**named, "latent": cache[..., :rank], "k_pe": cache[..., rank:]}


def test_the_reference_gradients_are_those_of_the_layer_decompressed_by_hand():
    p = problem_at(23, 23)
    got = gradients(lambda p: reference.prepare(VARIANT, p)(), p)
    expected = gradients(by_hand, p)
    assert set(got) == {"q_nope", "q_pe", "latent", "k_pe", "w_uk", "w_uv"}
    for name, grad in got.items():
        assert expected[name].abs().max() > 0, name
        torch.testing.assert_close(grad, expected[name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("implementation", ["reference", "sdpa", "compiled"])
def test_the_suites_gradient_check_passes_every_input_at_prefill(implementation):
    case = cases.Case("mla", VARIANT, MLA.implementation(implementation), PREFILL, "cpu")
    assert cases.backward_unsupported(case) is None
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line
    assert all(f" {g} " in result.line for g in GRADIENTS), result.line


def test_sdpa_with_the_shared_rope_keys_gradient_cut_fails_the_check(monkeypatch):
    decompress = sdpa.decompress

    def cut(problem):  # the forward unchanged; the RoPE key's gradient never reaches the cache
        rank = problem.config.kv_lora_rank
        cache = torch.cat([problem.cache[..., :rank], problem.cache[..., rank:].detach()], dim=-1)
        return decompress(dataclasses.replace(problem, cache=cache))

    monkeypatch.setattr(sdpa, "decompress", cut)
    result = check_workers.check_one(cases.Case("mla", VARIANT, MLA.implementation("sdpa"), PREFILL, "cpu"))
    assert result.status == "mismatch" and ": gradient dcache max error" in result.line, result.line


def test_flex_has_a_backward_at_prefill_on_the_gpu_only():
    flex = MLA.implementation("flex")
    assert cases.backward_unsupported(cases.Case("mla", VARIANT, flex, PREFILL, "cpu")) == "flex has no backward on the CPU"
    gpu_prefill = MLA.shape("deepseek-v3-mla-prefill-s4k")
    assert cases.backward_unsupported(cases.Case("mla", VARIANT, flex, gpu_prefill, "cuda")) is None


@pytest.mark.parametrize("implementation", ["reference", "sdpa", "flex", "compiled"])
def test_decode_is_refused_a_backward_with_its_reason(implementation):
    impl = MLA.implementation(implementation)
    assert cases.backward_unsupported(cases.Case("mla", VARIANT, impl, DECODE, "cuda")) == \
        "decode is inference: no backward"
    # asked alone, as a trained block's piece choice asks it (kernels/block/choice.py)
    for shape in (DECODE, MLAShape("chunk", "tiny-mla", batch=2, q_len=5, kv_len=37, device="cpu")):
        assert "absorbed form over the latent cache serves decode" in impl.backward_unsupported(VARIANT, shape)
    assert impl.backward_unsupported(VARIANT, PREFILL) is None


def test_our_decode_kernel_stays_forward_only(monkeypatch):
    from kernels.block.choice import serves

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # past the refusal of Triton on a CPU
    triton = MLA.implementation("triton")
    assert cases.backward_unsupported(cases.Case("mla", VARIANT, triton, DECODE, "cpu")) == "triton is forward-only"
    assert serves(triton, VARIANT, DECODE, torch.device("cpu"), trained=False) is None
    assert serves(triton, VARIANT, DECODE, torch.device("cpu"), trained=True) == "forward-only here"


def test_the_deepseek_v3_block_trains_through_fused_with_its_latents_up_projections(monkeypatch):
    from kernels.block import fused

    asked = []  # (family, trained) of each piece fused picks: a trained block's MLA only from those with a backward
    pick = fused.fastest_piece
    monkeypatch.setattr(fused, "fastest_piece", lambda name, *args: asked.append((name, args[4])) or pick(name, *args))
    case = cases.resolve("block", "deepseek-v3", "fused", "tiny-prefill-b2-s48", "cpu")
    assert cases.backward_unsupported(case) is None
    result = check_workers.check_one(case)  # the forward, then forward+backward against the float64 reference block
    assert result.status == "ok", result.line
    assert ("mla", False) in asked and ("mla", True) in asked
    assert "via attention sdpa" in result.line
    assert all(f" d{n} " in result.line for n in ("x", "w_dq", "q_a_norm", "w_uq", "w_dkv", "kv_a_norm", "wo",
                                                  "mla.w_uk", "mla.w_uv", "moe.w13")), result.line


def test_a_block_whose_latent_up_projection_is_cut_from_the_graph_fails_its_check(monkeypatch):
    decompress = sdpa.decompress
    monkeypatch.setattr(sdpa, "decompress", lambda p: decompress(dataclasses.replace(p, w_uk=p.w_uk.detach())))
    result = check_workers.check_one(cases.resolve("block", "deepseek-v3", "fused", "tiny-prefill-b2-s48", "cpu"))
    # the forward is right: the gradients alone fail, first the up-projection's
    assert result.status == "mismatch" and ": gradient dmla.w_uk max error" in result.line, result.line


@pytest.mark.parametrize("implementation", ["fused", "liger"])
def test_a_block_at_decode_and_a_linear_attention_block_on_the_cpu_stay_forward_only(implementation):
    why = BLOCK.implementation(implementation).backward_unsupported
    assert why(BLOCK.variant("deepseek-v3"), BLOCK.shape("tiny-prefill-b2-s48")) is None  # its MLA trains
    assert why(BLOCK.variant("qwen3-next"), BLOCK.shape("prefill-b4-s4k")) is None  # fla's backward on the GPU
    assert why(BLOCK.variant("qwen3-next"), BLOCK.shape("tiny-prefill-b2-s48")).startswith(
        "no fused linear implementation trains a block on the cpu")
    decode = cases.resolve("block", "deepseek-v3", "fused", "tiny-decode-b2-kv40", "cpu")
    assert cases.backward_unsupported(decode) == "decode is inference: no backward"


def test_the_backward_counts_the_attention_3_5x_and_the_latents_expansion_3x():
    p = problem_at(4, 4)
    config, heads, rank = p.config, p.config.n_heads, p.config.kv_lora_rank
    expansion = 2 * 2 * 4 * heads * rank * (config.qk_nope_dim + config.v_head_dim)
    attention = 2 * heads * 2 * 10 * (config.qk_dim + config.v_head_dim)  # 1 + 2 + 3 + 4 pairs a sequence
    (flops, nbytes), (flops_b, nbytes_b) = MLA.work(VARIANT, p), MLA.work(VARIANT, p, backward=True)
    assert flops == expansion + attention
    assert (flops_b, nbytes_b) == (3 * expansion + attention * 7 // 2, 3 * nbytes)
    with pytest.raises(ValueError, match="absorbed decode form: it has no backward"):
        MLA.work(VARIANT, problem_at(1, 37), backward=True)
    recipe, moe = BLOCK.variant("deepseek-v3"), family("moe")
    block = BLOCK.make_problem(recipe, BLOCK.shape("tiny-prefill-b2-s48"), device="cpu", dtype=torch.float32, seed=1)

    def rest(backward):  # the block less its MoE and its MLA call, each counted by its own family
        return (BLOCK.work(recipe, block, backward)[0] - moe.work(moe.variant(recipe.router), block.moe, backward)[0]
                - MLA.work(recipe.attention, block.mla, backward)[0])

    assert rest(True) == 3 * rest(False)  # the projections alone: each matmul 3x


def test_the_default_tier_runs_no_mla_backward():
    """MLA's default-tier shape is decode (every push's run stays within its minutes); its prefill
    forward+backwards, SDPA's and Flex's, run in the full tier."""
    def with_backward(tier):
        return {(c.implementation.name, c.shape.name) for c in cases.iter_cases("mla", "cuda", tier=tier)
                if not isinstance(c, tuple) and c.implementation.fused and cases.backward_unsupported(c) is None}

    assert with_backward("default") == set()
    assert with_backward("full") == {(i, s) for i in ("sdpa", "flex")
                                     for s in ("deepseek-v3-mla-prefill-s4k", "deepseek-v3-mla-prefill-s16k")}


def test_the_prefill_attention_output_gets_its_gradient_in_its_own_strides():
    # cuDNN's SDPA backward reads the output's gradient in the output's strides (kernels/attention/sdpa.py):
    # a block's (B, S, H, D) reshape hands back a transposed view, which must arrive re-laid
    from kernels.attention.sdpa import _GradientInOutputStrides

    out = torch.randn(2, 3, 5, 4, requires_grad=True) * 1  # (B, H, S, D) contiguous, as SDPA's
    seen = []
    out.register_hook(lambda grad: seen.append(grad.stride()))
    passed = _GradientInOutputStrides.apply(out)
    (passed.transpose(1, 2).reshape(2, 5, 12) * torch.randn(2, 5, 12)).sum().backward()
    assert seen == [out.stride()]
