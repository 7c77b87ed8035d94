"""Multi-head latent attention: the two forms of the reference against each other in float64, RoPE,
the work model, every implementation against the reference, and our split decode kernel through the
Triton interpreter at odd lengths, several splits and several new tokens."""

import math

import pytest
import torch

from reference import mla as reference
from variantbench import cases
from variantbench.catalog import family
from variantbench.shapes import MLAShape

MLA = family("mla")
TINY = MLAShape("t", "tiny-mla", batch=2, q_len=1, kv_len=37, device="cpu")


def problem_at(shape, dtype=torch.float64, seed=3):
    return MLA.make_problem(MLA.variant("mla"), shape, device="cpu", dtype=dtype, seed=seed)


@pytest.mark.parametrize("q_len,kv_len", [(1, 37), (5, 37), (23, 23)])
def test_the_absorbed_form_equals_the_decompressed_one_in_float64(q_len, kv_len):
    p = problem_at(MLAShape("t", "tiny-mla", batch=2, q_len=q_len, kv_len=kv_len, device="cpu"))
    args = (p.q_nope, p.q_pe, p.cache, p.w_uk, p.w_uv)
    decompressed = reference.decompressed(*args, scale=p.scale)
    absorbed = reference.absorbed(*args, scale=p.scale)
    assert decompressed.shape == (2, 8, q_len, 16)
    torch.testing.assert_close(absorbed, decompressed, rtol=1e-12, atol=1e-12)
    # and both are causal: the last query sees every key, so changing the last key moves only it
    p.cache[:, -1] += 1.0
    moved = reference.decompressed(*args, scale=p.scale)
    assert not torch.allclose(moved[:, :, -1], decompressed[:, :, -1])
    if q_len > 1:
        torch.testing.assert_close(moved[:, :, :-1], decompressed[:, :, :-1], rtol=0, atol=0)


def test_rope_keeps_norms_and_its_scores_depend_on_the_distance_only():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(16, generator=gen, dtype=torch.float64)

    def score(m, n):
        return float(reference.rope(q[None], torch.tensor([m]))[0] @ reference.rope(k[None], torch.tensor([n]))[0])

    assert math.isclose(score(7, 3), score(104, 100), rel_tol=1e-12)
    assert not math.isclose(score(7, 3), score(7, 4), rel_tol=1e-6)
    rotated = reference.rope(q.expand(5, 16), torch.arange(5))
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm().expand(5), rtol=1e-12, atol=0)


def test_the_problem_caches_rope_keys_at_their_positions():
    p = problem_at(TINY, seed=5)
    raw = torch.Generator().manual_seed(5)
    cache = torch.randn(2, 37, 48, generator=raw)
    torch.testing.assert_close(p.cache[..., :32], cache[..., :32].double())
    torch.testing.assert_close(p.cache[..., 32:], reference.rope(cache[..., 32:], torch.arange(37)).double())


def test_the_work_model_counts_causal_pairs_in_each_phases_form():
    config = MLA.shapes[0].config
    decode = problem_at(MLAShape("d", "tiny-mla", batch=2, q_len=3, kv_len=10, device="cpu"))
    pairs = 2 * (8 + 9 + 10)  # queries at positions 7, 8, 9 of 10 keys, two sequences
    rank, rope = decode.config.kv_lora_rank, decode.config.qk_rope_dim
    flops, nbytes = MLA.work(MLA.variant("mla"), decode)
    heads = decode.config.n_heads
    assert flops == 2 * heads * pairs * (2 * rank + rope) + 2 * 2 * 3 * heads * rank * (16 + 16)
    assert nbytes == 8 * (2 * 10 * 48 + 2 * heads * 16 * rank + 2 * 2 * heads * 3 * 16 + 2 * heads * 3 * 16)
    prefill = problem_at(MLAShape("p", "tiny-mla", batch=1, q_len=4, kv_len=4, device="cpu"))
    flops, _ = MLA.work(MLA.variant("mla"), prefill)
    assert flops == 2 * 4 * heads * rank * 32 + 2 * heads * 10 * (32 + 16)
    assert config.kv_lora_rank == 512 and config.qk_dim == 192  # DeepSeek-V3's, from its config


@pytest.mark.parametrize("case", [c for c in cases.iter_cases("mla", "cpu") if not isinstance(c, tuple)],
                         ids=lambda c: c.name)
def test_every_mla_implementation_matches_the_reference(case):
    _, _, result = cases.prepare_checked(case)
    assert result["ok"], result


def test_our_kernel_says_why_it_does_not_run_prefill():
    why = MLA.implementation("triton").unsupported(MLA.variant("mla"), MLA.shape("tiny-mla-s80"))
    assert "absorbed decode form" in why


@pytest.mark.parametrize("q_len,kv_len,n_splits", [(1, 37, 1), (1, 200, 3), (1, 200, 7), (3, 53, 4), (20, 80, 5)])
def test_our_split_decode_kernel_matches_the_float64_reference(q_len, kv_len, n_splits):
    """Splits of whole 16-key tiles, the last one short; with several new tokens each row has its own
    causal end, and with 20 new tokens over 5 splits of 16 the last split holds no key the first sees."""
    from kernels.mla.triton_decode import decode_launcher

    p = problem_at(MLAShape("t", "tiny-mla", batch=3, q_len=q_len, kv_len=kv_len, device="cpu"), dtype=torch.float32)
    launcher = decode_launcher(p.q_nope, p.q_pe, p.cache, p.w_uk, p.w_uv, scale=p.scale, n_splits=n_splits)
    assert launcher.n_splits == n_splits
    args = (t.double() for t in (p.q_nope, p.q_pe, p.cache, p.w_uk, p.w_uv))
    torch.testing.assert_close(launcher().double(), reference.absorbed(*args, scale=p.scale), rtol=1e-4, atol=1e-5)


def test_the_split_plan_fills_the_gpu_without_splits_shorter_than_a_minimum():
    from kernels.mla.triton_decode import MIN_SPLIT_KEYS, plan_splits

    cpu = torch.device("cpu")  # counts 4 SMs
    assert plan_splits(64, 128, 8192, cpu) == 1  # 128 programs already
    assert plan_splits(1, 128, 131072, cpu) == 2  # 2 row blocks x 2 splits: a program per SM
    assert plan_splits(1, 64, 131072, cpu) == 4
    assert plan_splits(1, 64, 2 * MIN_SPLIT_KEYS, cpu) == 2
    assert plan_splits(1, 16, 100, cpu) == 1


@pytest.mark.parametrize("impl", ["sdpa", "flex", "triton", "reference"])
def test_several_new_tokens_at_decode_see_their_own_causal_ends(impl):
    """Three new tokens over 53 (multi-token prediction's decode): the folded SDPA mask repeats per head."""
    shape = MLAShape("d3", "tiny-mla", batch=2, q_len=3, kv_len=53, device="cpu")
    case = cases.Case("mla", MLA.variant("mla"), MLA.implementation(impl), shape, "cpu")
    _, _, result = cases.prepare_checked(case)
    assert result["ok"], result
