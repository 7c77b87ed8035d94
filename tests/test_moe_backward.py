"""The moe family's backward on the CPU: the reference's gradients against a dense layer written here
(every expert on every token, weighted by a routing matrix), grouped_mm's against the reference's
(experts left empty included), the suite's gradient check of both and of MoE blocks trained through
fused, the implementations that stay forward-only refused with their reason, and the work model."""

import pytest
import torch
import torch.nn.functional as F

from kernels.moe import grouped_mm
from reference.moe import moe, route
from variantbench import cases, check_workers
from variantbench.catalog import family
from variantbench.shapes import MoEShape

MOE, BLOCK = family("moe"), family("block")
ROUTERS = ["softmax_topk", "sigmoid_grouped_topk"]
# 96 tokens: over MoEShape's 64-token decode bound, so its cases have a backward
PREFILL = MoEShape("tiny-moe-t96-zipf", "tiny-moe", 96, "zipf", device="cpu")
GRADIENTS = ("dx", "drouter_weight", "dw13", "dw2", "dshared13", "dshared2")


def problem_of(router, tokens, dtype, seed=3):
    shape = MoEShape("t", "tiny-moe", tokens, "zipf", device="cpu")
    return MOE.make_problem(MOE.variant(router), shape, device=torch.device("cpu"), dtype=dtype, seed=seed,
                            requires_grad=True)


def gradients(layer, p):
    """{input name: its gradient} of the layer's output under a seeded random output gradient."""
    out = layer(p)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype)
    return dict(zip(["x", *p.weights()], torch.autograd.grad(out, p.grad_inputs(), grad)))


def reference_layer(router):
    return lambda p: moe(router, p.config, p.x, p.router_weight, p.selection_bias, p.w13, p.w2, p.shared13, p.shared2)


# router -> (scores of the logits, the routed scale of the config): a chosen expert weighs its score
# over the chosen scores' sum, times the scale
SCORES = {"softmax_topk": (lambda logits: torch.softmax(logits, -1), lambda config: 1.0),
          "sigmoid_grouped_topk": (torch.sigmoid, lambda config: config.routed_scale)}


def dense_layer(router):
    """Every expert on every token, weighted by a (T, E) matrix that is zero off each token's chosen
    experts. Which experts are chosen is the reference router's (tests/test_moe.py checks it, and a
    choice carries no gradient); how they are weighted is written here, routed in float32 as models do."""
    scores_of, scale_of = SCORES[router]

    def layer(p):
        chosen = route(router, p.config, p.x.detach(), p.router_weight.detach(), p.selection_bias)[0]
        scores = scores_of(p.x.float() @ p.router_weight.float().T)
        picked = scores.gather(1, chosen)
        routing = torch.zeros_like(scores).scatter(1, chosen, scale_of(p.config) * picked / picked.sum(-1, keepdim=True))
        gate, up = torch.einsum("td,efd->tef", p.x, p.w13).chunk(2, -1)  # (T, E, ffn) each
        experts = torch.einsum("tef,edf->ted", F.silu(gate) * up, p.w2)  # (T, E, dim)
        gate, up = (p.x @ p.shared13.T).chunk(2, -1)
        return torch.einsum("te,ted->td", routing.to(p.x.dtype), experts) + (F.silu(gate) * up) @ p.shared2.T

    return layer


@pytest.mark.parametrize("router", ROUTERS)
def test_the_reference_gradients_are_the_dense_layers(router):
    p = problem_of(router, 48, torch.float64)
    got, expected = gradients(reference_layer(router), p), gradients(dense_layer(router), p)
    assert set(got) == {g[1:] for g in GRADIENTS}
    for name, grad in got.items():
        assert grad.abs().max() > 0, name
        # the routing weights are float32 on both sides, so the router's gradient is float32's
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("tokens", [3, 64])  # 3 tokens leave most experts without rows
@pytest.mark.parametrize("router", ROUTERS)
def test_grouped_mm_gradients_are_the_references(router, tokens):
    p = problem_of(router, tokens, torch.float32)
    got = gradients(lambda p: grouped_mm.prepare_function(MOE.variant(router), p)(p.x), p)
    expected = gradients(reference_layer(router), p)
    for name, grad in got.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("implementation", ["reference", "grouped_mm"])
@pytest.mark.parametrize("router", ROUTERS)
def test_the_suites_gradient_check_passes_every_weight(router, implementation):
    case = cases.Case("moe", MOE.variant(router), MOE.implementation(implementation), PREFILL, "cpu")
    assert cases.backward_unsupported(case) is None
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line
    assert all(f" {g} " in result.line for g in GRADIENTS), result.line


def detached(router):
    """The router with its weights cut from the graph: the output unchanged, the router untrained."""
    def cut(logits, config, selection_bias):
        experts, weights = router(logits, config, selection_bias)
        return experts, weights.detach()

    return cut


def test_a_router_cut_from_the_graph_fails_the_gradient_check(monkeypatch):
    monkeypatch.setitem(grouped_mm.ROUTERS, "softmax_topk", detached(grouped_mm.ROUTERS["softmax_topk"]))
    case = cases.Case("moe", MOE.variant("softmax_topk"), MOE.implementation("grouped_mm"), PREFILL, "cpu")
    result = check_workers.check_one(case)
    # the forward is right: the gradients alone fail
    assert result.status == "mismatch" and ": gradient dx max error" in result.line, result.line


@pytest.mark.parametrize("implementation", ["triton", "compiled"])
def test_triton_and_compiled_stay_forward_only(implementation):
    case = cases.Case("moe", MOE.variant("softmax_topk"), MOE.implementation(implementation), PREFILL, "cpu")
    assert cases.backward_unsupported(case) == f"{implementation} is forward-only"


def test_a_trained_block_refuses_our_forward_only_kernel_for_its_moe(monkeypatch):
    from kernels.block.choice import serves as _serves

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # past the refusal of Triton on a CPU
    triton, variant, cpu = MOE.implementation("triton"), MOE.variant("softmax_topk"), torch.device("cpu")
    assert _serves(triton, variant, PREFILL, cpu, trained=False) is None
    assert _serves(triton, variant, PREFILL, cpu, trained=True) == "forward-only here"


def test_a_gradient_check_too_big_for_the_device_runs_at_fewer_experts_in_whole_groups():
    """DeepSeek-V3's experts and their gradients in float64 are 169 GiB: its layer trains, and its
    gradients are checked at 56 of its 256 routed experts (7 of each group's 32; 57 with the shared
    one fill 37 of the 40 GiB). Mixtral's 21 GiB are checked whole."""
    shape = MOE.shape("deepseek-v3-prefill-t4k-zipf")
    case = cases.Case("moe", MOE.variant("sigmoid_grouped_topk"), MOE.implementation("grouped_mm"), shape, "cuda")
    assert cases.backward_unsupported(case) is None
    stand_in, why = MOE.gradient_check_shape(case.variant, shape)
    assert stand_in.config.n_experts == 56 and stand_in.config.n_groups == 8 and stand_in.tokens == shape.tokens
    assert "56 of the 256 routed experts" in why and "169 GiB" in why
    assert MOE.gradient_check_shape(case.variant, MOE.shape("mixtral-8x7b-prefill-t8k-zipf")) is None


@pytest.mark.parametrize("name", ["deepseek-v3@16", "deepseek-v3@20", "deepseek-v3@8", "deepseek-v3@x", "nope@8"])
def test_an_moe_model_with_fewer_experts_keeps_whole_groups_that_hold_its_top_k(name):
    from variantbench.shapes import moe_model

    if name == "deepseek-v3@16":  # 2 a group, 4 groups eligible: 8 candidates for top-8
        assert moe_model(name).n_experts == 16 and moe_model(name).name == name
        return
    with pytest.raises(KeyError):
        moe_model(name)


def stand_in_limit(monkeypatch, experts):
    """The check's limit set so tiny-moe's layer (8 routed, 1 shared, 64 x 128) fits `experts` routed."""
    from variantbench.catalog import moe as moe_catalog

    monkeypatch.setattr(moe_catalog, "GRADIENT_CHECK_MAX_BYTES", 16 * 3 * 64 * 128 * (experts + 1))
    checked = []  # the expert count of each problem the gradient check ran on
    check = cases.check_gradients
    monkeypatch.setattr(cases, "check_gradients", lambda case, problem, call: checked.append(
        getattr(problem, "moe", problem).config.n_experts) or check(case, problem, call))
    return checked


def test_a_layer_over_the_limit_is_checked_at_its_stand_in_and_a_wrong_gradient_still_fails(monkeypatch):
    checked = stand_in_limit(monkeypatch, 4)
    case = cases.Case("moe", MOE.variant("softmax_topk"), MOE.implementation("grouped_mm"), PREFILL, "cpu")
    result = check_workers.check_one(case)
    assert result.status == "ok" and "gradients checked at 4 of the 8 routed experts" in result.line, result.line
    assert checked == [4]
    monkeypatch.setitem(grouped_mm.ROUTERS, "softmax_topk", detached(grouped_mm.ROUTERS["softmax_topk"]))
    result = check_workers.check_one(case)
    assert result.status == "mismatch" and "4 of the 8 routed experts" in result.line, result.line


def test_a_layer_whose_fewest_routing_experts_do_not_fit_is_refused_a_backward_before_it_is_prepared(monkeypatch):
    stand_in_limit(monkeypatch, 1)  # one routed expert's worth: tiny-moe routes top-2 over 2 of 4 groups
    case = cases.Case("moe", MOE.variant("softmax_topk"), MOE.implementation("grouped_mm"), PREFILL, "cpu")
    assert "needs 4 of them in float64" in cases.backward_unsupported(case)
    block = cases.resolve("block", "qwen3-30b-a3b", "fused", "tiny-prefill-b2-s48", "cpu")
    assert "needs 4 of them in float64" in cases.backward_unsupported(block)
    result = check_workers.check_one(case)  # the forward still checked, no gradients
    assert result.status == "ok" and "gradients" not in result.line, result.line


def test_an_moe_block_over_the_limit_is_checked_at_its_stand_in(monkeypatch):
    checked = stand_in_limit(monkeypatch, 4)
    result = check_workers.check_one(cases.resolve("block", "qwen3-30b-a3b", "fused", "tiny-prefill-b2-s48", "cpu"))
    assert result.status == "ok" and "gradients checked at 4 of the 8 routed experts" in result.line, result.line
    assert checked == [4]


@pytest.mark.parametrize("name", ["qwen3-30b-a3b", "mixtral-8x7b"])
def test_moe_blocks_train_through_fused_grouped_mm_with_every_experts_weight(name, monkeypatch):
    from kernels.block import fused

    asked = []  # (family, trained) of each piece fused picks: a trained block's MoE only from those with a backward
    pick = fused.fastest_piece
    monkeypatch.setattr(fused, "fastest_piece", lambda name, *args: asked.append((name, args[4])) or pick(name, *args))
    case = cases.resolve("block", name, "fused", "tiny-prefill-b2-s48", "cpu")
    assert cases.backward_unsupported(case) is None
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line
    assert ("moe", False) in asked and ("moe", True) in asked  # the forward's check, then the trained one's
    assert "mlp grouped_mm" in result.line
    assert all(f" d{n} " in result.line for n in ("x", "wq", "moe.router_weight", "moe.w13", "moe.w2",
                                                  "moe.shared13", "moe.shared2")), result.line


def test_an_moe_block_whose_router_is_cut_from_the_graph_fails_its_check(monkeypatch):
    monkeypatch.setitem(grouped_mm.ROUTERS, "softmax_topk", detached(grouped_mm.ROUTERS["softmax_topk"]))
    result = check_workers.check_one(cases.resolve("block", "qwen3-30b-a3b", "fused", "tiny-prefill-b2-s48", "cpu"))
    # the forward is right: the gradients alone fail
    assert result.status == "mismatch" and ": gradient dx max error" in result.line, result.line


@pytest.mark.parametrize("implementation", ["fused", "liger"])
def test_only_linear_attention_on_the_cpu_keeps_an_moe_block_forward_only(implementation):
    why = BLOCK.implementation(implementation).backward_unsupported
    shape = BLOCK.shape("prefill-b4-s4k")
    assert why(BLOCK.variant("qwen3-30b-a3b"), shape) is None and why(BLOCK.variant("mixtral-8x7b"), shape) is None
    assert why(BLOCK.variant("deepseek-v3"), BLOCK.shape("tiny-prefill-b2-s48")) is None  # test_mla_backward.py trains it
    assert why(BLOCK.variant("qwen3-next"), BLOCK.shape("prefill-b4-s4k")) is None  # fla's backward on the GPU
    assert why(BLOCK.variant("qwen3-next"), BLOCK.shape("tiny-prefill-b2-s48")).startswith(
        "no fused linear implementation trains a block on the cpu")


@pytest.mark.parametrize("implementation", ["reference", "fused", "compiled", "liger"])
def test_a_block_whose_experts_gradient_check_would_not_fit_trains_and_is_checked_at_fewer(implementation):
    """DeepSeek-V3's block at its real dims: the check's float64 copies of 256 experts' weights and
    their gradients are 169 GiB, over an H200's 141 GB; its gradients are checked at 56 of them,
    whichever implementation trains it."""
    variant, shape = BLOCK.variant("deepseek-v3"), BLOCK.shape("prefill-b4-s4k")
    assert BLOCK.implementation(implementation).backward_unsupported(variant, shape) is None
    stand_in, why = BLOCK.gradient_check_shape(variant, shape)
    assert stand_in.config("deepseek-v3").moe_config.n_experts == 56 and "169 GiB" in why
    assert BLOCK.gradient_check_shape(BLOCK.variant("mixtral-8x7b"), shape) is None


def test_the_backward_counts_each_matmul_three_times_in_the_moe_and_its_block():
    p = problem_of("softmax_topk", 96, torch.float32)
    variant = MOE.variant("softmax_topk")
    (flops, nbytes), (flops_b, nbytes_b) = MOE.work(variant, p), MOE.work(variant, p, backward=True)
    assert (flops_b, nbytes_b) == (3 * flops, 2 * nbytes)
    recipe = BLOCK.variant("qwen3-30b-a3b")
    block = BLOCK.make_problem(recipe, BLOCK.shape("tiny-prefill-b2-s48"), device="cpu", dtype=torch.float32, seed=1)
    moe_f, moe_b = (MOE.work(variant, block.moe, backward=b)[0] for b in (False, True))
    rest_f, rest_b = BLOCK.work(recipe, block)[0] - moe_f, BLOCK.work(recipe, block, backward=True)[0] - moe_b
    assert 3 * rest_f < rest_b < 3.5 * rest_f  # its projections 3x, its attention 3.5x
