"""The linear family's backward on the CPU: the chunked reference's gradients to q, k, v, g and beta
against the gated delta rule written a token at a time here (float64, an odd length over two chunks,
gates near 0 and near 1), the suite's gradient check for the reference and compiled and its failure
where beta's gradient is cut, fla's thin wrapper (a stand-in for fla-core, which is not installed
here: its backward is untested on any machine), fla refused a backward on the CPU and where it raises (Hopper under Triton 3.4-3.7.0), ours
forward-only, Qwen3-Next's block (on the CPU the reference block trains, fused is refused: no fused linear
implementation has a CPU backward), the work model and the default tier left without linear backwards."""

import sys
import types

import pytest
import torch

from reference import linear_attention as reference
from variantbench import cases, check_workers
from variantbench.catalog import family
from variantbench.catalog.linear import LinearProblem
from variantbench.shapes import LINEAR_MODELS, moe_model, named

LINEAR, BLOCK, MOE = family("linear"), family("block"), family("moe")
VARIANT = LINEAR.variant("gated_deltanet")
TINY = LINEAR.shape("tiny-linear-t100")
GRADIENTS = ("dq", "dk", "dv", "dg", "dbeta")


def by_hand(q, k, v, g, beta, scale):
    """S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T, o_t = S_t (scale q_t), per sequence and
    value head h, which reads query/key head h // (HV / H); q, k arrive L2-normalised."""
    batch, tokens, heads, k_dim = q.shape
    v_heads, v_dim = v.shape[2], v.shape[3]
    eye = torch.eye(k_dim, dtype=v.dtype)
    out = []
    for b in range(batch):
        per_head = []
        for h in range(v_heads):
            j = h // (v_heads // heads)
            state, rows = torch.zeros(v_dim, k_dim, dtype=v.dtype), []
            for t in range(tokens):
                kt, strength = k[b, t, j], beta[b, t, h]
                state = (g[b, t, h].exp() * state @ (eye - strength * torch.outer(kt, kt))
                         + strength * torch.outer(v[b, t, h], kt))
                rows.append(state @ (scale * q[b, t, j]))
            per_head.append(torch.stack(rows))
        out.append(torch.stack(per_head, dim=1))
    return torch.stack(out)


def extreme_problem(tokens=83, seed=5):
    """float64, tiny-linear's heads (2 q/k, 4 value heads of 16); every other token's gate a near 0
    (g = -9, a = 1.2e-4) or near 1 (g = -1e-3), beta likewise near 0 (0.02) or 1 (0.98), the rest drawn."""
    config = named(LINEAR_MODELS, "tiny-linear", "linear-attention model")
    gen = torch.Generator().manual_seed(seed)

    def randn(*size):
        return torch.randn(*size, generator=gen, dtype=torch.float64)

    size = (1, tokens, config.n_v_heads)
    pick = torch.randint(0, 3, size, generator=gen)
    g = torch.where(pick == 0, -9.0, torch.where(pick == 1, -1e-3, torch.nn.functional.logsigmoid(randn(*size))))
    beta = torch.where(pick == 0, 0.98, torch.where(pick == 1, 0.02, torch.sigmoid(randn(*size))))
    normal = [torch.nn.functional.normalize(randn(1, tokens, config.n_qk_heads, config.k_dim), dim=-1)
              for _ in range(2)]
    tensors = [*normal, randn(1, tokens, config.n_v_heads, config.v_dim), g, beta]
    return LinearProblem(config, *(t.requires_grad_() for t in tensors), seed=seed)


def gradients(out, p):
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype)
    return torch.autograd.grad(out, p.grad_inputs(), grad, allow_unused=True, materialize_grads=True)


def test_the_reference_gradients_are_those_of_the_rule_a_token_at_a_time():
    p = extreme_problem()  # 83 tokens: one chunk of 64 and one padded
    assert p.v.shape[1] % reference.CHUNK
    got = gradients(reference.prepare(VARIANT, p)(), p)
    expected = gradients(by_hand(p.q, p.k, p.v, p.g, p.beta, p.scale), p)
    for name, grad, want in zip(GRADIENTS, got, expected):
        assert want.abs().max() > 0, name
        torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("implementation", ["reference", "compiled"])
def test_the_suites_gradient_check_passes_every_input(implementation):
    case = cases.Case("linear", VARIANT, LINEAR.implementation(implementation), TINY, "cpu")
    assert cases.backward_unsupported(case) is None
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line
    assert all(f" {g} " in result.line for g in GRADIENTS), result.line


def test_the_reference_with_betas_gradient_cut_fails_the_check(monkeypatch):
    def cut(variant, p):  # the forward unchanged; beta's gradient never leaves the rule
        return lambda: reference.chunked(p.q, p.k, p.v, p.g, p.beta.detach(), scale=p.scale)

    monkeypatch.setattr(reference, "prepare", cut)
    result = check_workers.check_one(cases.Case("linear", VARIANT, LINEAR.implementation("reference"), TINY, "cpu"))
    assert result.status == "mismatch" and ": gradient dbeta max error" in result.line, result.line


def test_fla_passes_the_rule_its_inputs_as_they_are(monkeypatch):
    """fla.py around a stand-in for fla-core's chunk_gated_delta_rule (the reference, returning (o,
    final state) as fla's does): the wrapper cuts no gradient and changes no input."""
    from kernels.linear import fla

    stand_in = types.ModuleType("fla.ops.gated_delta_rule")
    stand_in.chunk_gated_delta_rule = lambda q, k, v, g, beta, *, scale: (
        reference.chunked(q, k, v, g, beta, scale=scale), None)
    monkeypatch.setitem(sys.modules, "fla.ops.gated_delta_rule", stand_in)
    p = extreme_problem(tokens=21)
    got = gradients(fla.prepare(VARIANT, p)(), p)
    expected = gradients(reference.prepare(VARIANT, p)(), p)
    for name, grad, want in zip(GRADIENTS, got, expected):
        torch.testing.assert_close(grad, want, rtol=0, atol=0, msg=name)


def test_fla_has_a_backward_on_the_gpu_only_and_ours_none(monkeypatch):
    from kernels.block.choice import serves

    fla, triton = LINEAR.implementation("fla"), LINEAR.implementation("triton")
    assert cases.backward_unsupported(cases.Case("linear", VARIANT, fla, TINY, "cpu")) == "fla has no backward on the CPU"
    gpu = LINEAR.shape("qwen3-next-t4k")
    assert cases.backward_unsupported(cases.Case("linear", VARIANT, fla, gpu, "cuda")) is None
    assert cases.backward_unsupported(cases.Case("linear", VARIANT, triton, gpu, "cuda")) == "triton is forward-only"
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # past the refusal of Triton on a CPU
    assert serves(triton, VARIANT, TINY, torch.device("cpu"), trained=False) is None
    assert serves(triton, VARIANT, TINY, torch.device("cpu"), trained=True) == "forward-only here"


@pytest.mark.parametrize("capability, triton, tilelang, refused", [
    ((9, 0), "3.6.0", False, True),  # an H200 with this session's Triton: fla raises in its backward
    ((9, 0), "3.4.0", False, True),
    ((9, 0), "3.7.1", False, False),  # fixed in Triton
    ((9, 0), "3.3.1", False, False),  # before the miscompile
    ((9, 0), "3.6.0", True, False),  # tilelang serves the kernel instead
    ((8, 0), "3.6.0", False, False),  # an A100
    (None, "3.6.0", False, False),  # no GPU answered
])
def test_fla_refuses_its_backward_where_it_raises_on_hopper(monkeypatch, capability, triton, tilelang, refused):
    """fla-core raises in its gated backward on Hopper under Triton 3.4.0 up to 3.7.1 (its issue #640);
    the catalog says so before any call, so that check, try and the block's fused piece skip fla's
    backward with the reason and still check and time its forward."""
    import importlib.util

    from variantbench import device

    import triton as triton_package

    monkeypatch.setattr(device, "compute_capability", lambda: capability)
    monkeypatch.setattr(triton_package, "__version__", triton)
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if tilelang else None) if name == "tilelang" else found(name, *a))
    fla, gpu = LINEAR.implementation("fla"), LINEAR.shape("qwen3-next-t4k")
    why = cases.backward_unsupported(cases.Case("linear", VARIANT, fla, gpu, "cuda"))
    if refused:
        assert why.startswith(f"fla-core refuses its gated backward on Hopper under Triton {triton} ") and "#640" in why
    else:
        assert why is None
    assert cases.backward_unsupported(cases.Case("linear", VARIANT, fla, TINY, "cpu")) == "fla has no backward on the CPU"


def test_the_qwen3_next_block_trains_through_the_reference_on_the_cpu_and_fused_on_the_gpu():
    """On the CPU no fused linear implementation has a backward (fla's is CUDA's, ours none), so fused
    is refused and the reference block trains; at the real dims on the GPU fused trains (through fla),
    the gradient check holding 3 x 2048 x 512 x 513 = 1.61e9 expert weights, 24 GiB in float64 with
    their gradients, under the moe family's 40 GiB."""
    recipe = BLOCK.variant("qwen3-next")
    for name in ("fused", "liger"):
        why = BLOCK.implementation(name).backward_unsupported
        assert why(recipe, BLOCK.shape("tiny-prefill-b2-s48")) == (
            "no fused linear implementation trains a block on the cpu: fla has no backward there, triton is forward-only")
        assert why(recipe, BLOCK.shape("prefill-b4-s4k")) is None
    experts = moe_model("qwen3-next")
    assert 3 * experts.dim * experts.ffn_dim * (experts.n_experts + experts.n_shared) * 16 / 2**30 == pytest.approx(24.05, abs=0.01)
    result = check_workers.check_one(cases.resolve("block", "qwen3-next", "reference", "tiny-prefill-b2-s48", "cpu"))
    assert result.status == "ok", result.line
    assert all(f" d{n} " in result.line for n in ("x", "w_qkvz", "w_ba", "conv_weight", "a_log", "dt_bias", "out_norm",
                                                  "wo", "moe.w13")), result.line
    # a trained block's linear piece gets inputs that train, so that fused can time its backward
    block = BLOCK.make_problem(recipe, BLOCK.shape("tiny-prefill-b2-s48"), device="cpu", dtype=torch.float32, seed=1,
                               requires_grad=True)
    assert all(t.requires_grad for t in block.linear.grad_inputs())


def test_the_reference_blocks_gradients_are_those_of_the_rule_a_token_at_a_time(monkeypatch):
    """The block's weights' gradients in float64 through the chunked rule, and again with the rule
    replaced by the one written here: the block trains its gated DeltaNet through the chunked backward.
    48 tokens are one chunk: the state's hand-over between chunks is the first test's (83 tokens)."""
    from reference import block as reference_block

    recipe, shape = BLOCK.variant("qwen3-next"), BLOCK.shape("tiny-prefill-b2-s48")
    p = BLOCK.make_problem(recipe, shape, device="cpu", dtype=torch.float64, seed=2, requires_grad=True)

    def block_gradients():
        out = reference_block.prepare(recipe, p)()
        return gradients(out, p)

    got = block_gradients()
    monkeypatch.setattr(reference, "chunked", lambda q, k, v, g, beta, *, scale: by_hand(q, k, v, g, beta, scale))
    expected = block_gradients()
    names = ["x", *p.weights(), *(f"moe.{n}" for n in p.moe.weights())]
    assert len(names) == len(got) == len(expected)
    for name, grad, want in zip(names, got, expected):
        assert want.abs().max() > 0, name
        torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-11, msg=name)


def test_the_backward_counts_the_rule_3x_and_the_block_counts_it_as_the_linear_family_does():
    p = LINEAR.make_problem(VARIANT, TINY, device="cpu", dtype=torch.float32, seed=1)
    (flops, nbytes), (flops_b, nbytes_b) = LINEAR.work(VARIANT, p), LINEAR.work(VARIANT, p, backward=True)
    assert (flops_b, nbytes_b) == (3 * flops, 3 * nbytes)
    recipe = BLOCK.variant("qwen3-next")
    block = BLOCK.make_problem(recipe, BLOCK.shape("tiny-prefill-b2-s48"), device="cpu", dtype=torch.float32, seed=1)

    def rest(backward):  # the block less its MoE and its rule, each counted by its own family
        return (BLOCK.work(recipe, block, backward)[0] - MOE.work(MOE.variant(recipe.router), block.moe, backward)[0]
                - LINEAR.work(recipe.attention, block.linear, backward)[0])

    assert rest(False) > 0 and rest(True) == 3 * rest(False)  # the projections and convolution alone: 3x


def test_the_default_tier_runs_no_linear_backward(monkeypatch):
    """The linear family's GPU shapes and Qwen3-Next's block recipe are full-tier: every push's run
    times no linear forward+backward. fla-core counted as installed, as on the GPU."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: object() if name == "fla" else
                        find_spec(name, *args))

    def with_backward(family_name, tier):
        return {(c.variant.name, c.implementation.name, c.shape.name)
                for c in cases.iter_cases(family_name, "cuda", tier=tier)
                if not isinstance(c, tuple) and c.implementation.fused and cases.backward_unsupported(c) is None}

    assert with_backward("linear", "default") == set()
    assert not any(v == "qwen3-next" for v, _, _ in with_backward("block", "default"))
    # fla at every prefill shape (decode is inference); compiled up to 64 chunks (4096 tokens)
    gpu = [s.name for s in LINEAR.shapes if s.device == "cuda" and s.phase == "prefill"]
    assert with_backward("linear", "full") == {("gated_deltanet", "fla", s) for s in gpu} | \
        {("gated_deltanet", "compiled", s) for s in ("qwen3-next-t4k", "qwen3-next-b4-t4k")}


def test_compute_capability_is_nvidia_smis_answer_for_the_first_visible_gpu(monkeypatch):
    """Read without torch (which would initialise CUDA before asv forks); no answer is None."""
    from variantbench import device

    asked = []

    def answers(args, **_):
        asked.append(args)
        return types.SimpleNamespace(stdout="9.0\n")

    def fails(*_, **__):
        raise OSError("no nvidia-smi")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    for run, wanted in ((answers, (9, 0)), (fails, None)):
        monkeypatch.setattr(device.subprocess, "run", run)
        device.compute_capability.cache_clear()
        assert device.compute_capability() == wanted
    assert asked[0][-2:] == ["-i", "3"]
    device.compute_capability.cache_clear()
