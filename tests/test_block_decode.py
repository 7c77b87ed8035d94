"""A Gated DeltaNet block (Qwen3-Next's) at decode: its cache is the short convolution's state (the last
width - 1 tokens' q, k, v channels before the convolution) and the rule's state, and one new token
takes a step from them. The step must continue the prefill it follows; the fused block runs the
linear family's step (ours through the interpreter here); the work model counts the state moved."""

import os

import pytest
import torch

from reference import block as reference_block
from reference import linear_attention as reference_linear
from variantbench import cases, check_workers
from variantbench.block_shapes import BlockShape
from variantbench.catalog import family

BLOCK = family("block")
RECIPE = BLOCK.variant("qwen3-next")
DECODE = BLOCK.shape("tiny-decode-b2-kv40")


def caches_after(p, tokens):
    """(convolution state, rule state) the reference's own pieces leave after `tokens`: the channels
    before the convolution of the last width - 1 of them, and the rule's state stepped through them."""
    c, lin = p.config, p.config.linear_config
    h = reference_block.NORMS[RECIPE.norm](tokens, p.attn_norm, c.eps)
    key, value = lin.n_qk_heads * lin.k_dim, lin.n_v_heads * lin.v_dim
    channels = (h @ p.w_qkvz.t())[..., :2 * key + value]
    q, k, v, g, beta, _ = reference_block.delta_inputs(c, p, h)
    state = torch.zeros(h.shape[0], lin.n_v_heads, lin.v_dim, lin.k_dim, dtype=h.dtype)
    for t in range(h.shape[1]):
        now = slice(t, t + 1)
        state = reference_linear.step(q[:, now], k[:, now], v[:, now], g[:, now], beta[:, now], state,
                                      scale=lin.k_dim ** -0.5)[1]
    return channels[:, -(c.conv - 1):], state


@pytest.mark.parametrize("tokens", [2, 9])  # fewer tokens than the convolution's width, and more
def test_a_decode_step_is_the_last_row_of_the_prefill_it_follows(tokens):
    shape = BlockShape("t", batch=2, q_len=tokens + 1, kv_len=tokens + 1, size="tiny", device="cpu")
    p = BLOCK.make_problem(RECIPE, shape, device="cpu", dtype=torch.float64, seed=3)
    prefill = reference_block.block(RECIPE, p.config, p, p.x)
    conv_state, state = caches_after(p, p.x[:, :tokens])
    if tokens < p.config.conv - 1:  # a sequence's start: zeros before its first token, as prefill pads
        conv_state = torch.cat([conv_state.new_zeros(2, p.config.conv - 1 - tokens, conv_state.shape[-1]),
                                conv_state], dim=1)
    got = reference_block.block(RECIPE, p.config, p, p.x[:, -1:], cache=(conv_state, state))
    torch.testing.assert_close(got[:, 0], prefill[:, -1], rtol=1e-9, atol=1e-9)
    zero_conv = reference_block.block(RECIPE, p.config, p, p.x[:, -1:], cache=(torch.zeros_like(conv_state), state))
    assert not torch.allclose(zero_conv[:, 0], prefill[:, -1], atol=1e-6)  # the convolution state counts


def test_the_decode_problem_carries_both_states_and_the_reference_reads_them():
    p = BLOCK.make_problem(RECIPE, DECODE, device="cpu", dtype=torch.float32, seed=4)
    lin = p.config.linear_config
    assert p.conv_state.shape == (2, p.config.conv - 1, 2 * lin.n_qk_heads * lin.k_dim + lin.n_v_heads * lin.v_dim)
    assert p.delta_state.shape == (2, lin.n_v_heads, lin.v_dim, lin.k_dim) and p.delta_state.dtype == torch.float32
    assert p.cache[0] is p.conv_state and p.cache[1] is p.delta_state
    wide = p.converted(torch.float64)
    out = reference_block.block(RECIPE, wide.config, wide, wide.x, cache=wide.cache)
    stale = reference_block.block(RECIPE, wide.config, wide, wide.x, cache=(wide.conv_state, 2 * wide.delta_state))
    assert out.shape == (2, 1, p.config.dim) and not torch.allclose(out, stale)


@pytest.mark.parametrize("implementation", ["fused", "compiled", "reference"])
def test_every_block_implementation_passes_its_check_at_decode(implementation):
    if implementation == "fused" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("our Triton kernels run on the CPU under TRITON_INTERPRET=1 (fla-core is GPU-only)")
    case = cases.resolve("block", "qwen3-next", implementation, "tiny-decode-b2-kv40", "cpu")
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line
    if implementation == "fused":
        assert "via attention triton" in result.line, result.line


def test_the_fused_step_leaves_the_problems_state_for_the_next_call():
    """A step returns the new state beside the output; the problem's must stay as it was, or the check
    (the reference reads it after the call) and every timed call after the first would step from
    another state."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("our Triton kernels run on the CPU under TRITON_INTERPRET=1")
    from kernels.block import fused

    p = BLOCK.make_problem(RECIPE, DECODE, device="cpu", dtype=torch.float32, seed=6)
    before = p.delta_state.clone(), p.conv_state.clone()
    call = fused.prepare(RECIPE, p)
    first = call()
    assert torch.equal(p.delta_state, before[0]) and torch.equal(p.conv_state, before[1])
    torch.testing.assert_close(call(), first, rtol=0, atol=0)


def test_the_decode_work_counts_the_state_read_and_written():
    """At decode the rule's state dominates a Gated DeltaNet layer's bytes besides its weights: read
    and written once a step (float32), with the convolution state read."""
    p = BLOCK.make_problem(RECIPE, DECODE, device="cpu", dtype=torch.bfloat16, seed=1)
    flops, nbytes = BLOCK.work(RECIPE, p)
    weights = sum(t.numel() for t in p.weights().values()) * 2
    tokens = 2 * p.x.numel() * 2
    states = 2 * p.delta_state.numel() * 4 + p.conv_state.numel() * 2
    moe_bytes = family("moe").work(family("moe").variant(RECIPE.router), p.moe)[1]
    assert nbytes == weights + tokens + states + moe_bytes
    assert flops > 0
