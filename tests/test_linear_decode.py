"""Gated DeltaNet's decode step: the reference's `step` against the rule as the issue writes it and
against the chunked prefill it continues (float64, gates near 0 and 1), our decode kernel through the
interpreter at odd head sizes, fla's fused recurrent kernel called as the catalog calls it (a stand-in:
fla-core is not installed here), the decode shapes, their work model and their timing."""

import sys
import types

import pytest
import torch

from reference import linear_attention as reference
from test_linear import inputs as rule_inputs
from variantbench import cases, check_workers, timing
from variantbench.catalog import family
from variantbench.shapes import LinearShape

LINEAR = family("linear")
VARIANT = LINEAR.variant("gated_deltanet")


def inputs(tokens, heads=2, v_heads=4, *, dtype=torch.float64, **kwargs):
    """test_linear's seeded rule inputs (batch 2, float64), in `dtype`."""
    return tuple(x.to(dtype) for x in rule_inputs(tokens, heads, v_heads, **kwargs))


def by_hand(q, k, v, g, beta, *, scale):
    """The rule with the identity matrix, a token at a time: (outputs, the state after the last)."""
    batch, tokens, heads, k_dim = q.shape
    v_heads, v_dim = v.shape[2], v.shape[3]
    state = torch.zeros(batch, v_heads, v_dim, k_dim, dtype=torch.float64)
    out = torch.empty(batch, tokens, v_heads, v_dim, dtype=torch.float64)
    eye = torch.eye(k_dim, dtype=torch.float64)
    for b in range(batch):
        for h in range(v_heads):
            for t in range(tokens):
                kt, a, bt = k[b, t, h // (v_heads // heads)], g[b, t, h].exp(), beta[b, t, h]
                state[b, h] = a * state[b, h] @ (eye - bt * torch.outer(kt, kt)) + bt * torch.outer(v[b, t, h], kt)
                out[b, t, h] = state[b, h] @ (scale * q[b, t, h // (v_heads // heads)])
    return out, state


@pytest.mark.parametrize("decay_offset", [3.0, -6.0, 12.0])  # a near 0.95; near 0 (forget); near 1
def test_a_step_continues_the_prefill_it_follows(decay_offset):
    """70 tokens (over a chunk boundary): the step from the state after 69 gives the chunked prefill's
    70th output, and the state the rule as written leaves after 70."""
    q, k, v, g, beta = inputs(70, decay_offset=decay_offset)
    scale = 0.25
    _, before = by_hand(*(x[:, :69] for x in (q, k, v, g, beta)), scale=scale)
    wanted_out, wanted_state = by_hand(q, k, v, g, beta, scale=scale)
    out, state = reference.step(*(x[:, 69:] for x in (q, k, v, g, beta)), before, scale=scale)
    assert out.shape == (2, 1, 4, 8) and state.shape == (2, 4, 8, 16)
    torch.testing.assert_close(out[:, 0], reference.chunked(q, k, v, g, beta, scale=scale)[:, 69], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out[:, 0], wanted_out[:, 69], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(state, wanted_state, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("heads, v_heads, k_dim, v_dim, strength", [
    (2, 4, 16, 8, None),
    (1, 3, 24, 48, None),  # K and V not powers of two; V over one block of 32
    (2, 2, 32, 40, 0.999),  # writes near 1
    (2, 4, 16, 8, 1e-4),  # writes near 0: the decayed state alone
])
def test_our_decode_kernel_is_the_step(monkeypatch, heads, v_heads, k_dim, v_dim, strength):
    from kernels.linear import triton_gdn_decode

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v, g, beta = inputs(1, heads, v_heads, k_dim=k_dim, v_dim=v_dim, dtype=torch.float32, seed=3)
    if strength is not None:
        beta = torch.full_like(beta, strength)
    state = torch.randn(2, v_heads, v_dim, k_dim, generator=torch.Generator().manual_seed(4))
    out, new_state = triton_gdn_decode.step_launcher(q, k, v, g, beta, state, scale=0.3)()
    wanted_out, wanted_state = reference.step(*(x.double() for x in (q, k, v, g, beta, state)), scale=0.3)
    torch.testing.assert_close(out.double(), wanted_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new_state.double(), wanted_state, rtol=1e-5, atol=1e-5)
    assert out.dtype == v.dtype and new_state.dtype == torch.float32


def test_our_decode_kernel_refuses_a_state_of_another_layout():
    from kernels.linear import triton_gdn_decode

    q, k, v, g, beta = inputs(1, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(B, HV, V, K\) = \(2, 4, 8, 16\) float32, not \(2, 4, 16, 8\)"):
        triton_gdn_decode.step_launcher(q, k, v, g, beta, torch.zeros(2, 4, 16, 8), scale=0.3)


@pytest.mark.parametrize("implementation", ["reference", "triton", "compiled"])
def test_every_decode_implementation_passes_the_check_output_and_state(monkeypatch, implementation):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    case = cases.resolve("linear", "gated_deltanet", implementation, "tiny-linear-decode-b3", "cpu")
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line


def test_the_check_fails_a_step_that_drops_the_decay(monkeypatch):
    """A step that forgets a (reads S where a S is meant) passes no check: the view covers the state."""
    real = reference.step

    def no_decay(q, k, v, g, beta, state, *, scale):
        return real(q, k, v, torch.zeros_like(g), beta, state, scale=scale)

    monkeypatch.setitem(sys.modules, "kernels.linear.broken", types.SimpleNamespace(
        prepare=lambda variant, p: (lambda: no_decay(p.q, p.k, p.v, p.g, p.beta, p.state, scale=p.scale))))
    case = cases.resolve("linear", "gated_deltanet", "reference", "tiny-linear-decode-b3", "cpu")
    monkeypatch.setattr(type(case.implementation), "load", lambda self: sys.modules["kernels.linear.broken"])
    with pytest.raises(cases.Mismatch, match="max error"):
        cases.prepare_checked(case)


def test_fla_runs_a_step_through_its_fused_recurrent_kernel_from_the_state(monkeypatch):
    """The catalog's fla call at decode, around a stand-in for fla-core (not installed here) with
    fla-core 0.6.0's parameters in their order (gk, gv before beta: passed by place, beta landed in gk,
    max error inf on an H200), that checks what fla is given: the state value-major as ours
    (state_v_first) and the final state asked."""
    from kernels.linear import fla

    seen = {}

    def fused_recurrent_gated_delta_rule(q, k, v, g=None, gk=None, gv=None, beta=None, scale=None,
                                         initial_state=None, output_final_state=False, use_qk_l2norm_in_kernel=False,
                                         use_gate_in_kernel=False, A_log=None, dt_bias=None,
                                         use_beta_sigmoid_in_kernel=False, allow_neg_eigval=False,
                                         state_v_first=False, cu_seqlens=None):
        assert gk is None and gv is None and g is not None and beta is not None
        seen.update(state=initial_state, final=output_final_state, v_first=state_v_first)
        return reference.step(q, k, v, g, beta, initial_state, scale=scale)

    stand_in = types.ModuleType("fla.ops.gated_delta_rule")
    stand_in.fused_recurrent_gated_delta_rule = fused_recurrent_gated_delta_rule
    monkeypatch.setitem(sys.modules, "fla.ops.gated_delta_rule", stand_in)
    problem = LINEAR.make_problem(VARIANT, LINEAR.shape("tiny-linear-decode-b3"), device="cpu", dtype=torch.float32, seed=2)
    out, state = fla.prepare(VARIANT, problem)()
    assert seen["state"] is problem.state and seen["final"] and seen["v_first"]
    wanted = reference.step(problem.q, problem.k, problem.v, problem.g, problem.beta, problem.state, scale=problem.scale)
    torch.testing.assert_close((out, state), wanted)


def test_a_decode_shape_is_one_token_a_step_graphed_and_has_no_backward():
    shape = LINEAR.shape("qwen3-next-decode-b64")
    assert shape.phase == "decode" and timing.decode_step(shape)
    assert not timing.decode_step(LINEAR.shape("qwen3-next-t4k"))
    fla = LINEAR.implementation("fla")
    assert cases.backward_unsupported(cases.Case("linear", VARIANT, fla, shape, "cuda")) == "decode is inference: no backward"
    with pytest.raises(ValueError, match="a decode step brings one token a sequence, not 2"):
        LinearShape("two", "tiny-linear", batch=1, tokens=2, decode=True)


def test_the_decode_work_model_is_the_state_read_and_written():
    """qwen3-next-decode-b64's counts on a CPU problem of its real dims: 6 K V FLOPs a head, and the
    float32 state (64 x 32 x 128 x 128 x 4 = 134 MB) in and out beside the step's own inputs."""
    problem = LINEAR.make_problem(VARIANT, LINEAR.shape("qwen3-next-decode-b64"), device="cpu", dtype=torch.bfloat16,
                                  seed=1)
    flops, nbytes = LINEAR.work(VARIANT, problem)
    state = 64 * 32 * 128 * 128 * 4
    assert flops == 64 * 32 * 6 * 128 * 128
    q_and_k, v_or_out = 2 * 64 * 16 * 128 * 2, 64 * 32 * 128 * 2  # bfloat16
    g, beta = 64 * 32 * 4, 64 * 32 * 2  # float32 log-decays, bfloat16 strengths
    assert nbytes == 2 * state + q_and_k + 2 * v_or_out + g + beta == 270_020_608
