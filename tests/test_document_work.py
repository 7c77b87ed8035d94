"""The document walk's work items listed once by a caller (triton_attention.document_work), as a training
step's forward needs them (it builds a launcher every call), and their check where they reach the Gluon
forward (gluon_walk.checked_items). On the CPU the Gluon forward refuses every call, so its refusal is
patched where the listing itself is under test."""

import pytest
import torch

pytest.importorskip("triton.experimental.gluon", reason="this Triton has no Gluon")
from kernels.attention import gluon_flash, gluon_walk, triton_attention  # noqa: E402
from kernels.attention.gluon_walk import DocumentWork, checked_items, document_items  # noqa: E402
from kernels.attention.triton_attention_backward import TritonAttention  # noqa: E402
from variantbench.catalog.attention import AttentionVariant, document_starts, make_problem  # noqa: E402
from variantbench.shapes import AttentionShape  # noqa: E402


def _options(doc_start, window=None, prefix=None):
    return dict(causal=True, window=window, prefix=prefix, doc_start=doc_start, softcap=None, alibi=False)


@pytest.mark.parametrize("kv_heads,alibi,positions", [(4, False, 128), (1, False, 32), (2, False, 64), (1, True, 128)],
                         ids=["a-head-an-item", "4-heads-packed", "2-heads-packed", "alibi-a-head"])
def test_document_work_lists_the_gluon_forwards_items_where_it_walks_documents(monkeypatch, kv_heads, alibi,
                                                                                positions):
    """Where the Gluon forward runs (refusal patched away), the items of doc_start's int32 copy at the
    positions an item holds there (BLOCK_M over gluon_walk.document_pack: 4 query heads of one KV head
    packed, 2, or under ALiBi one); none without documents, with a window or a prefix beside them."""
    monkeypatch.setattr(triton_attention, "gluon_refusal", lambda q, k, v: None)
    q, k = torch.zeros(2, 4, 640, 16), torch.zeros(2, kv_heads, 640, 16)
    doc_start = document_starts(2, 640, seed=12)
    items = triton_attention.document_work(q, k, k, dict(_options(doc_start.long()), alibi=alibi))
    assert items.rows == positions and torch.equal(items.listed, document_items(doc_start, positions))
    assert triton_attention.document_work(q, k, k, _options(None)) is None
    assert triton_attention.document_work(q, k, k, _options(doc_start, window=64)) is None
    assert triton_attention.document_work(q, k, k, _options(doc_start, prefix=64)) is None


@pytest.mark.parametrize("heads,kv_heads,pack", [(32, 8, 4), (32, 32, 1), (32, 1, 8), (12, 2, 2), (6, 1, 2),
                                                 (9, 3, 1), (16, 1, 8)])
def test_document_pack_is_the_largest_power_of_two_up_to_8_that_divides_the_group(heads, kv_heads, pack):
    q, k = torch.zeros(1, heads, 128, 16), torch.zeros(1, kv_heads, 128, 16)
    doc_start = torch.zeros(1, 128, dtype=torch.int32)
    assert gluon_walk.document_pack(q, k, doc_start, None, None, False) == pack
    assert gluon_flash.item_positions(q, k, doc_start, None, None, False) == gluon_flash.BLOCK_M // pack


def test_document_pack_is_one_outside_the_document_walk_and_under_alibi():
    """A window or prefix beside the documents walks 128-row blocks of one head; ALiBi's bias carries one slope."""
    q, k = torch.zeros(1, 32, 128, 16), torch.zeros(1, 8, 128, 16)
    doc_start = torch.zeros(1, 128, dtype=torch.int32)
    assert gluon_walk.document_pack(q, k, None, None, None, False) == 1
    assert gluon_walk.document_pack(q, k, doc_start, 64, None, False) == 1
    assert gluon_walk.document_pack(q, k, doc_start, None, 64, False) == 1
    assert gluon_walk.document_pack(q, k, doc_start, None, None, True) == 1


def test_document_work_lists_nothing_where_another_kernel_runs():
    """On the CPU the Triton forward runs every call, and it walks documents without a list."""
    q = k = v = torch.zeros(1, 2, 256, 16)
    assert triton_attention.document_work(q, k, v, _options(document_starts(1, 256, seed=1))) is None


def test_checked_items_takes_a_list_of_the_right_shape_dtype_device_and_positions_only():
    """A list at other positions an item than the kernel walks would leave rows out or take them twice."""
    doc_arg = document_starts(2, 640, seed=12)
    listed = document_items(doc_arg, 32)
    assert checked_items(DocumentWork(listed, 32), doc_arg, 32) is listed
    for wrong in (listed[:-1], listed.long(), torch.empty(listed.shape, dtype=torch.int32, device="meta"),
                  document_items(doc_arg[:1], 32)):
        with pytest.raises(ValueError, match="document walk's items"):
            checked_items(DocumentWork(wrong, 32), doc_arg, 32)
    for wrong in (DocumentWork(document_items(doc_arg, 128), 128), listed):  # other positions; a bare list
        with pytest.raises(ValueError, match="document walk's items"):
            checked_items(wrong, doc_arg, 32)


def test_listed_items_reach_the_autograd_function_and_change_no_gradient():
    """TritonAttention takes the listed items as a fifth argument (nothing flows back to it); the
    interpreter's Triton forward does not read them, so output and gradients equal a call without them."""
    shape = AttentionShape("t", "tiny", 1, 96, 96, device="cpu")
    problem = make_problem(AttentionVariant("document", documents=True), shape, device="cpu", dtype=torch.float32,
                           seed=4, requires_grad=True)
    options = _options(problem.doc_start)
    items = DocumentWork(document_items(problem.doc_start, gluon_flash.BLOCK_M), gluon_flash.BLOCK_M)
    inputs = (problem.q, problem.k, problem.v)
    grad = torch.randn(problem.q.shape, generator=torch.Generator().manual_seed(0))
    with_items = TritonAttention.apply(*inputs, options, items)
    without = TritonAttention.apply(*inputs, options)
    torch.testing.assert_close(with_items, without, rtol=0, atol=0)
    for got, expected in zip(torch.autograd.grad(with_items, inputs, grad), torch.autograd.grad(without, inputs, grad)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
