"""Gated DeltaNet: the recurrence against the rule as the issue writes it, the chunked form against the
recurrence in float64 at odd lengths with gates near 0 and 1, the work model, and every implementation
against the reference."""

import pytest
import torch

from reference import linear_attention as reference
from variantbench import cases
from variantbench.catalog import family

LINEAR = family("linear")


def inputs(tokens, heads, v_heads, *, decay_offset=3.0, seed=0, k_dim=16, v_dim=8):
    gen = torch.Generator().manual_seed(seed)

    def randn(*size):
        return torch.randn(*size, generator=gen, dtype=torch.float64)

    q = torch.nn.functional.normalize(randn(2, tokens, heads, k_dim), dim=-1)
    k = torch.nn.functional.normalize(randn(2, tokens, heads, k_dim), dim=-1)
    v = randn(2, tokens, v_heads, v_dim)
    g = torch.nn.functional.logsigmoid(decay_offset + randn(2, tokens, v_heads))
    beta = torch.sigmoid(randn(2, tokens, v_heads))
    return q, k, v, g, beta


def test_the_recurrence_is_the_gated_delta_rule_as_written():
    """S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + b_t v_t k_t^T, o_t = S_t q_t, with the identity matrix,
    one (batch, value head) at a time; value head h reads key head h // 2."""
    q, k, v, g, beta = inputs(9, 2, 4)
    scale = 0.25
    out = reference.recurrence(q, k, v, g, beta, scale=scale)
    for b in range(2):
        for h in range(4):
            state, eye = torch.zeros(8, 16, dtype=torch.float64), torch.eye(16, dtype=torch.float64)
            for t in range(9):
                kt, a, bt = k[b, t, h // 2], g[b, t, h].exp(), beta[b, t, h]
                state = a * state @ (eye - bt * torch.outer(kt, kt)) + bt * torch.outer(v[b, t, h], kt)
                torch.testing.assert_close(out[b, t, h], state @ (scale * q[b, t, h // 2]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tokens", [1, 37, 64, 100, 130])
@pytest.mark.parametrize("decay_offset", [-8.0, 3.0, 12.0], ids=["gates-near-0", "typical", "gates-near-1"])
@pytest.mark.parametrize("heads,v_heads", [(2, 4), (3, 3)])
def test_the_chunked_form_equals_the_recurrence_in_float64(tokens, decay_offset, heads, v_heads):
    q, k, v, g, beta = inputs(tokens, heads, v_heads, decay_offset=decay_offset, seed=tokens)
    expected = reference.recurrence(q, k, v, g, beta, scale=0.25)
    for chunk in (16, 64):
        torch.testing.assert_close(reference.chunked(q, k, v, g, beta, scale=0.25, chunk=chunk), expected,
                                   rtol=1e-10, atol=1e-12)


def test_the_chunked_form_keeps_half_precision_inputs_dtype_and_computes_in_float32():
    q, k, v, g, beta = (x.to(torch.bfloat16) for x in inputs(70, 2, 4))
    out = reference.chunked(q, k, v, g, beta, scale=0.25)
    assert out.dtype == torch.bfloat16
    exact = reference.recurrence(*(x.double() for x in (q, k, v, g, beta)), scale=0.25)
    assert (out.double() - exact).abs().max() < 2e-2  # bfloat16 rounding of the output alone


def test_the_work_model_grows_with_chunks_and_reads_every_input_once():
    shape = LINEAR.shape("tiny-linear-t100")
    problem = LINEAR.make_problem(LINEAR.variant("gated_deltanet"), shape, device="cpu", dtype=torch.float32, seed=1)
    flops, nbytes = LINEAR.work(LINEAR.variant("gated_deltanet"), problem)
    c, k_dim, v_dim = 64, 16, 16
    per_chunk = 2 * c * c * k_dim + c * (c - 1) * (k_dim + v_dim) + 6 * c * k_dim * v_dim + c * (c + 1) * v_dim
    assert flops == 2 * 4 * 2 * per_chunk  # batch 2, 4 value heads, 100 tokens in 2 chunks
    assert nbytes == 4 * (2 * 100 * 2 * 16 * 2 + 2 * 100 * 4 * 16 * 2 + 2 * 100 * 4 * 2)


@pytest.mark.parametrize("case", [c for c in cases.iter_cases("linear", "cpu") if not isinstance(c, tuple)],
                         ids=lambda c: c.name)
def test_every_linear_implementation_matches_the_reference(case):
    _, _, result = cases.prepare_checked(case)
    assert result["ok"], result


def test_the_peer_says_how_to_install_it_where_it_is_missing(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    why = LINEAR.implementation("fla").unsupported(LINEAR.variant("gated_deltanet"), LINEAR.shape("qwen3-next-t4k"))
    assert "fla-core is not installed" in why and ".[peers]" in why


@pytest.mark.parametrize("tokens", [1, 37, 64, 130])
@pytest.mark.parametrize("decay_offset", [-8.0, 3.0, 12.0], ids=["gates-near-0", "typical", "gates-near-1"])
@pytest.mark.parametrize("heads,v_heads,v_dim,block_v", [(2, 4, 16, 16), (1, 1, 32, 16), (1, 1, 64, 64)])
def test_our_chunked_kernel_matches_the_recurrence(tokens, decay_offset, heads, v_heads, v_dim, block_v):
    """Through the interpreter in float32: odd lengths (a partial last chunk), one token, gates near 0
    and 1, grouped value heads, the value dim split over two programs, and the state pass's value
    blocks (32 rows at most) narrower than the output's."""
    from kernels.linear.triton_gdn import gdn_launcher

    q, k, v, g, beta = inputs(tokens, heads, v_heads, decay_offset=decay_offset, seed=tokens, v_dim=v_dim)
    got = gdn_launcher(*(x.float() for x in (q, k, v, g, beta)), scale=0.25, block_v=block_v)()
    torch.testing.assert_close(got.double(), reference.recurrence(q, k, v, g, beta, scale=0.25), rtol=1e-4, atol=2e-6)


def test_without_its_peer_baseline_a_case_keeps_its_figures_and_has_no_ratio(tmp_path, monkeypatch):
    """fla-core is not installed here: our kernel's metrics have no ratio (NaN: asv records no figure)
    and say why, instead of failing the case."""
    import math

    from variantbench import metrics

    monkeypatch.delenv("VARIANTBENCH_RUN_DIR", raising=False)
    case = cases.resolve("linear", "gated_deltanet", "triton", "tiny-linear-t100", "cpu")
    figures = metrics.metrics(case)
    assert math.isnan(figures["ratio_to_baseline"]) and math.isnan(figures["time_ratio"])
    assert "fla-core is not installed" in figures["no_baseline"]
    assert figures["tflops"] > 0 and figures["max_error"] <= figures["tolerance"]


def chunk_wy(k, v, g, beta, dtype, chunk=64):
    """log G, W_k = (I + A)^-1 diag(b G) K and W_v = (I + A)^-1 diag(b) V of every chunk, (B, HV, n, C, ...),
    computed in `dtype` through an explicit inverse: neither the kernel's blocks nor the reference's
    triangular solve. Padded tokens write nothing and decay nothing, as in reference.chunked."""
    batch, tokens, v_heads, _ = v.shape
    pad, n = -tokens % chunk, -(-tokens // chunk)
    k = k.repeat_interleave(v_heads // k.shape[2], dim=2)

    def chunks(x):  # (B, T, HV, D) -> (B, HV, n, C, D)
        x = torch.nn.functional.pad(x.to(dtype), (0, 0, 0, 0, 0, pad))
        return x.view(batch, n, chunk, v_heads, -1).permute(0, 3, 1, 2, 4)

    k, v, g, beta = chunks(k), chunks(v), chunks(g[..., None])[..., 0], chunks(beta[..., None])[..., 0]
    gam = g.cumsum(-1)
    lower = torch.ones(chunk, chunk, dtype=torch.bool).tril(-1)
    a = torch.where(lower, beta[..., None] * (gam[..., :, None] - gam[..., None, :]).exp() * (k @ k.mT), 0.0)
    inverse = torch.linalg.inv(torch.eye(chunk, dtype=dtype) + a)
    return gam, inverse @ ((beta * gam.exp())[..., None] * k), inverse @ (beta[..., None] * v)


@pytest.mark.parametrize("tokens", [1, 17, 63, 64, 65, 130])
@pytest.mark.parametrize("decay_offset", [-8.0, 3.0, 12.0], ids=["gates-near-0", "typical", "gates-near-1"])
@pytest.mark.parametrize("keys", ["random", "aligned"])
def test_our_chunk_inverse_is_exact_across_its_blocks(tokens, decay_offset, keys):
    """`_inverse_kernel` inverts each chunk's I + A as 4 x 4 blocks of 16 x 16 (K in blocks of 16 here,
    two of them) and `_w_kernel` applies it, so their W_k and W_v (all of the inverse the rest sees) are
    checked against float64 directly: lengths inside one block, across blocks, one chunk exactly and a partial chunk after it; gates near 0 (A is its diagonal blocks),
    near 1 (the blocks below the diagonal are as large as those on it); keys at random, or all near one
    direction (k_i.k_j about 0.9: A's entries near b_i, T's widest). The budget is 4x the error of the
    same explicit inverse in float32 against float64, plus a float32 rounding band."""
    from kernels.linear.triton_gdn_wy import CHUNK, SUB, _inverse_kernel, _w_kernel

    _, k, v, g, beta = inputs(tokens, 2, 4, decay_offset=decay_offset, seed=tokens, k_dim=32, v_dim=16)
    if keys == "aligned":  # each unit key plus 3x one shared unit direction: k_i.k_j 0.82 to 0.97
        k = torch.nn.functional.normalize(k + 3 * torch.ones(32, dtype=k.dtype) / 32 ** 0.5, dim=-1)
    n = -(-tokens // CHUNK)
    rows = 2 * 4 * n * CHUNK  # batch 2, 4 value heads
    gam, inverse, w_k, w_v = torch.empty(rows), torch.empty(rows, CHUNK), torch.empty(rows, 32), torch.empty(rows, 16)
    k32, v32, g32, beta32 = (x.float() for x in (k, v, g, beta))
    _inverse_kernel[(n, 2 * 4)](k32, g32, beta32, gam, inverse, tokens, 2, 4, 2, KD=32, C=CHUNK, S=SUB, BK=16)
    _w_kernel[(n, 2 * 4)](k32, v32, beta32, gam, inverse, w_k, w_v, tokens, 2, 4, 2, KD=32, VD=16, C=CHUNK, S=SUB)
    got = gam.view(2, 4, n, CHUNK), w_k.view(2, 4, n, CHUNK, 32), w_v.view(2, 4, n, CHUNK, 16)
    exact, single = chunk_wy(k, v, g, beta, torch.float64), chunk_wy(k, v, g, beta, torch.float32)
    for name, ours, want, low in zip(("log G", "W_k", "W_v"), got, exact, single):
        budget = 4 * (low.double() - want).abs().max().item() + 1e-6 * want.abs().max().item()
        error = (ours.double() - want).abs().max().item()
        assert error <= budget, f"{name}: {error:.3g} over {budget:.3g}"
