"""DSA's backward through our kernels (the interpreter): the masked forward's autograd function, whose dK/dV and dQ
kernels mask every tile by the selection's bytes, against float64 autograd of the reference over its selection as
the mask; where the catalog's call runs it, and where the gather, forward-only, refuses a gradient."""

import pytest
import torch

from kernels.attention import triton_token_sparse
from kernels.attention.triton_attention_backward import TritonAttention
from reference.attention import attention
from variantbench.catalog import Unsupported
from variantbench.catalog.attention import AttentionVariant, make_problem
from variantbench.shapes import AttentionShape


# 192 x 192: three 64-key tiles a side, so the dK/dV kernel's row blocks see a tile whole by the interval and in
# part by the selection; 160 queries at the end of 200 keys: cross lengths, the last key tile part padding
@pytest.mark.parametrize("q_len,kv_len,topk", [(192, 192, 24), (160, 200, 40)], ids=["prefill-192", "chunk-160-of-200"])
def test_gradients_match_float64_autograd_of_the_reference_over_the_selection(q_len, kv_len, topk):
    variant = AttentionVariant(f"dsa_topk_{topk}", topk_tokens=topk)
    shape = AttentionShape("t", "tiny", 2, q_len, kv_len, device="cpu")
    p = make_problem(variant, shape, device="cpu", dtype=torch.float32, seed=1, requires_grad=True)
    options = dict(causal=True, selection=triton_token_sparse.selection_bytes(p.selection))
    out = TritonAttention.apply(p.q, p.k, p.v, options)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad(out, (p.q, p.k, p.v), grad)
    exact = [t.detach().double().requires_grad_() for t in (p.q, p.k, p.v)]
    reference = attention(*exact, mask_mod=variant.mask_mod(p))
    torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=1e-5)
    for name, g, e in zip("qkv", got, torch.autograd.grad(reference, exact, grad.double())):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=2e-5, msg=lambda m, name=name: f"d{name}: {m}")


def test_the_catalogs_call_takes_a_gradient_where_the_forward_masks_and_the_gather_refuses_one():
    """32 of 256 keys a query (0.23 of the causal pairs) run the masked kernels both ways; 8 (0.06) would gather,
    which has no backward: one line saying so, with the share."""
    shape = AttentionShape("s256", "tiny", 1, 256, 256, device="cpu")
    dense = AttentionVariant("dsa_topk_32", topk_tokens=32)
    problem = make_problem(dense, shape, device="cpu", dtype=torch.float32, seed=1, requires_grad=True)
    call = triton_token_sparse.prepare(dense, problem)
    assert "forward and backward" in call.backend
    out = call()
    dq, = torch.autograd.grad(out.sum(), problem.q)
    assert torch.isfinite(dq).all() and dq.abs().max() > 0
    sparse = AttentionVariant("dsa_topk_8", topk_tokens=8)
    problem = make_problem(sparse, shape, device="cpu", dtype=torch.float32, seed=1, requires_grad=True)
    with pytest.raises(Unsupported, match=r"gather kernel is forward-only.*\(here 0\.06"):
        triton_token_sparse.prepare(sparse, problem)
