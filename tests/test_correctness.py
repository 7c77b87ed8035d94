"""Every implementation against the reference, with tolerances derived from the data; our Triton
kernel through the interpreter at small shapes with awkward lengths."""

import math

import pytest
import torch

from reference.attention import attention
from variantbench import cases
from variantbench.catalog import attention as catalog
from variantbench.catalog.attention import AttentionVariant
from variantbench.shapes import AttentionShape


def test_reference_matches_textbook_formula_in_float64():
    """The oracle itself against softmax(QK^T/sqrt(D) + bias) V written out for one head, no masking
    helpers shared."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    k, v = k[:, :1], v[:, :1]  # MQA: both query heads read KV head 0
    out = attention(q, k, v, mask_mod=lambda b, h, qi, ki: qi >= ki)
    for head in range(2):
        scores = q[0, head] @ k[0, 0].T / math.sqrt(4)
        scores = scores + torch.triu(torch.full((6, 6), float("-inf"), dtype=torch.float64), 1)
        expected = torch.softmax(scores, -1) @ v[0, 0]
        assert torch.allclose(out[0, head], expected, atol=1e-12)


def test_reference_sampled_rows_equal_full_rows():
    variant = catalog.VARIANTS[3]
    shape = AttentionShape("t", "tiny", batch=1, q_len=64, kv_len=64, device="cpu")
    prob = catalog.make_problem(variant, shape, device="cpu", dtype=torch.float64, seed=1)
    full = attention(prob.q, prob.k, prob.v, mask_mod=variant.mask_mod(prob))
    rows = torch.tensor([0, 17, 63])
    part = attention(prob.q[:, :, rows], prob.k, prob.v, mask_mod=variant.mask_mod(prob), q_idx=rows)
    # float64 throughout: sampled and full rows differ only by the matmuls' blocking (1e-16)
    torch.testing.assert_close(full[:, :, rows], part, rtol=1e-12, atol=1e-14)


def _case(variant, impl, shape):
    fam_impl = catalog.FAMILY.implementation(impl)
    return cases.Case("attention", variant, fam_impl, shape, "cpu")


CATALOG_CASES = [c for c in cases.iter_cases("attention", "cpu") if not isinstance(c, tuple)]


@pytest.mark.parametrize("case", CATALOG_CASES, ids=lambda c: c.name)
def test_catalog_case_matches_reference(case):
    _, _, result = cases.prepare_checked(case)
    assert result["ok"], result


BACKWARD_CASES = [c for c in CATALOG_CASES if not cases.backward_unsupported(c)]


@pytest.mark.parametrize("case", BACKWARD_CASES, ids=lambda c: c.name)
def test_catalog_case_gradients_match_reference(case):
    _, _, result = cases.prepare_checked(case, requires_grad=True)
    assert {"max_error_dq", "max_error_dk", "max_error_dv"} <= set(result), result


class _ScaledBackward(torch.autograd.Function):
    """Identity forward; backward off by a factor: a kernel whose forward is right and gradient wrong."""

    @staticmethod
    def forward(ctx, out):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.01


def test_gradient_check_catches_a_backward_one_percent_off():
    case = next(c for c in BACKWARD_CASES if c.implementation.name == "sdpa" and c.variant.name == "gqa_8")
    problem = catalog.make_problem(case.variant, case.shape, device=torch.device("cpu"), dtype=case.dtype,
                                   seed=3, requires_grad=True)
    call = case.implementation.load().prepare(case.variant, problem)
    assert all(g["ok"] for g in cases.check_gradients(case, problem, call).values())
    wrong = cases.check_gradients(case, problem, lambda: _ScaledBackward.apply(call()))
    assert not any(g["ok"] for g in wrong.values()), wrong


def test_flex_has_no_cpu_backward_and_says_so():
    case = next(c for c in CATALOG_CASES if c.implementation.name == "flex")
    assert cases.backward_unsupported(case) == "flex has no backward on the CPU"


# Lengths that are not multiples of the interpreter's 64-row blocks, windows and prefixes that cut
# blocks, a prefix longer than the sequence, decode over a cache, and MQA.
AWKWARD = [
    (AttentionVariant("sliding_window_7", window=7), AttentionShape("s77", "tiny", 2, 77, 77, device="cpu")),
    (AttentionVariant("prefix_lm_20", prefix=20), AttentionShape("s77", "tiny", 2, 77, 77, device="cpu")),
    (AttentionVariant("prefix_lm_500", prefix=500), AttentionShape("s70", "tiny", 1, 70, 70, device="cpu")),
    (AttentionVariant("document", documents=True), AttentionShape("s150", "tiny", 2, 150, 150, device="cpu")),
    (AttentionVariant("mqa_window_9", kv_heads=1, window=9), AttentionShape("d1", "tiny", 3, 1, 133, device="cpu")),
    (AttentionVariant("softcap_alibi", softcap=5.0, alibi=True), AttentionShape("s65", "tiny", 1, 65, 65, device="cpu")),
    (AttentionVariant("full", causal=False), AttentionShape("q3", "tiny", 1, 3, 90, device="cpu")),
]


@pytest.mark.parametrize("variant,shape", AWKWARD, ids=lambda x: x.name)
@pytest.mark.parametrize("impl", ["triton", "flex"])
def test_awkward_shapes_match_reference(variant, shape, impl):
    _, _, result = cases.prepare_checked(_case(variant, impl, shape))
    assert result["ok"], result


def test_a_wrong_kernel_is_a_mismatch(monkeypatch):
    """The check must fail a kernel that is off by one key: drop the window by one."""
    import kernels.attention.triton_flash as ours

    real = ours.forward_launcher
    monkeypatch.setattr(ours, "forward_launcher", lambda *a, window=None, **kw: real(*a, window=window - 1, **kw))
    case = _case(AttentionVariant("sliding_window_7", window=7), "triton", AWKWARD[0][1])
    with pytest.raises(cases.Mismatch, match="exceeds the tolerance"):
        cases.prepare_checked(case)


def test_timed_inputs_differ_from_checked_inputs():
    case = _case(catalog.VARIANTS[1], "reference", AWKWARD[0][1])
    problem, call, _ = cases.prepare_checked(case)
    fresh = catalog.make_problem(case.variant, case.shape, device="cpu", dtype=torch.float32, seed=cases.SEED)
    assert torch.equal(problem.q, fresh.q)
    checked = catalog.make_problem(case.variant, case.shape, device="cpu", dtype=torch.float32,
                                   seed=cases.SEED + cases.CHECK_SEED_OFFSET)
    assert not torch.equal(problem.q, checked.q)


def test_forward_backward_gradients_match_reference():
    variant, shape = catalog.VARIANTS[3], AttentionShape("s40", "tiny", 1, 40, 40, device="cpu")
    grads = {}
    for impl in ("reference", "sdpa"):  # Flex has no CPU backward
        problem, call, _ = cases.prepare_checked(_case(variant, impl, shape), requires_grad=True)
        grads[impl] = cases.forward_backward(problem, call)()
    for impl in ("sdpa",):
        for got, want in zip(grads[impl], grads["reference"]):
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_our_triton_attention_keeps_its_autotune_choice_per_machine_and_key(tmp_path, monkeypatch):
    """Triton's disk cache of autotune results skips configs with a pre-hook (ours set the descriptors'
    tile), so every process re-tuned and close configs won by turns. The kernel remembers the first
    choice per tuning key; a later process benchmarks only that one, and another key tunes afresh."""
    from kernels import tuned_choices
    from kernels.attention import triton_flash as ours

    monkeypatch.setattr(tuned_choices, "CHOICES_DIR", tmp_path)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    flags = dict(CAUSAL=True, WINDOW=False, PREFIX=False, DOCUMENTS=False, SOFTCAP=False, ALIBI=False, HEAD_DIM=128,
                 SELECTION=False)
    q = torch.empty(1, dtype=torch.bfloat16)
    named_args = {"Q": q, "group": 4, "q_len": 4096, "kv_len": 4096}
    configs = ours.PREFILL_CONFIGS
    assert ours._remembered(configs, named_args, **flags) == configs  # nothing chosen yet: tune them all
    ours._remember(configs[2], {"group": 4, "q_len": 4096, "kv_len": 4096, **flags}, torch.bfloat16)
    assert ours._remembered(configs, named_args, **flags) == [configs[2]]
    assert ours._remembered(configs, {**named_args, "q_len": 1024}, **flags) == configs
    assert ours._remembered(configs, named_args, **{**flags, "WINDOW": True}) == configs
    assert ours._remembered(configs, {**named_args, "Q": q.float()}, **flags) == configs
    ours._remember(configs[0], {"group": 4, "q_len": 4096, "kv_len": 4096, **flags}, torch.bfloat16)
    assert ours._remembered(configs, named_args, **flags) == [configs[2]]  # the first choice stays
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


@pytest.mark.parametrize("variant,shape", AWKWARD[:2], ids=lambda x: x.name)
def test_a_forced_tile_matches_the_reference(variant, shape):
    """Our prepare's config= (a plug-in candidate's forced tile): a 32x16 tile, not the interpreter's
    64x64, at lengths no tile divides, checked as every case is."""
    import triton

    from kernels.attention import triton_attention as ours
    from variantbench.plugins import PluginImplementation

    tile = triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=2)
    forced = PluginImplementation("triton_32x16", module="", fused=True, backward=False, needs_triton=True,
                                  prepare=lambda v, problem: ours.prepare(v, problem, config=tile))
    _, _, result = cases.prepare_checked(cases.Case("attention", variant, forced, shape, "cpu"))
    assert result["ok"], result
