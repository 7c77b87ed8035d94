"""The document walk's work items listed once by a caller (triton_attention.document_work), as a training
step's forward needs them (it builds a launcher every call), and their check where they reach the Gluon
forward (gluon_walk.checked_items). On the CPU the Gluon forward refuses every call, so its refusal is
patched where the listing itself is under test."""

import pytest
import torch

pytest.importorskip("triton.experimental.gluon", reason="this Triton has no Gluon")
from kernels.attention import gluon_flash, triton_attention  # noqa: E402
from kernels.attention.gluon_walk import checked_items, document_items  # noqa: E402
from kernels.attention.triton_attention_backward import TritonAttention  # noqa: E402
from variantbench.catalog.attention import AttentionVariant, document_starts, make_problem  # noqa: E402
from variantbench.shapes import AttentionShape  # noqa: E402


def _options(doc_start, window=None, prefix=None):
    return dict(causal=True, window=window, prefix=prefix, doc_start=doc_start, softcap=None, alibi=False)


def test_document_work_lists_the_gluon_forwards_items_where_it_walks_documents(monkeypatch):
    """Where the Gluon forward runs (refusal patched away), the items of doc_start's int32 copy at the
    forward's BLOCK_M rows; none without documents, with a window or a prefix beside them."""
    monkeypatch.setattr(triton_attention, "gluon_refusal", lambda q, k, v: None)
    q = k = v = torch.zeros(2, 4, 640, 16)
    doc_start = document_starts(2, 640, seed=12)
    items = triton_attention.document_work(q, k, v, _options(doc_start.long()))
    assert torch.equal(items, document_items(doc_start, gluon_flash.BLOCK_M))
    assert triton_attention.document_work(q, k, v, _options(None)) is None
    assert triton_attention.document_work(q, k, v, _options(doc_start, window=64)) is None
    assert triton_attention.document_work(q, k, v, _options(doc_start, prefix=64)) is None


def test_document_work_lists_nothing_where_another_kernel_runs():
    """On the CPU the Triton forward runs every call, and it walks documents without a list."""
    q = k = v = torch.zeros(1, 2, 256, 16)
    assert triton_attention.document_work(q, k, v, _options(document_starts(1, 256, seed=1))) is None


def test_checked_items_takes_a_list_of_the_right_shape_dtype_and_device_only():
    doc_arg = document_starts(2, 640, seed=12)
    items = document_items(doc_arg, gluon_flash.BLOCK_M)
    assert checked_items(items, doc_arg) is items
    for wrong in (items[:-1], items.long(), torch.empty(items.shape, dtype=torch.int32, device="meta"),
                  document_items(doc_arg[:1], gluon_flash.BLOCK_M)):
        with pytest.raises(ValueError, match="document walk's items"):
            checked_items(wrong, doc_arg)


def test_listed_items_reach_the_autograd_function_and_change_no_gradient():
    """TritonAttention takes the listed items as a fifth argument (nothing flows back to it); the
    interpreter's Triton forward does not read them, so output and gradients equal a call without them."""
    shape = AttentionShape("t", "tiny", 1, 96, 96, device="cpu")
    problem = make_problem(AttentionVariant("document", documents=True), shape, device="cpu", dtype=torch.float32,
                           seed=4, requires_grad=True)
    options = _options(problem.doc_start)
    items = document_items(problem.doc_start, gluon_flash.BLOCK_M)
    inputs = (problem.q, problem.k, problem.v)
    grad = torch.randn(problem.q.shape, generator=torch.Generator().manual_seed(0))
    with_items = TritonAttention.apply(*inputs, options, items)
    without = TritonAttention.apply(*inputs, options)
    torch.testing.assert_close(with_items, without, rtol=0, atol=0)
    for got, expected in zip(torch.autograd.grad(with_items, inputs, grad), torch.autograd.grad(without, inputs, grad)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
