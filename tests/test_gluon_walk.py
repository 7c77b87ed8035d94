"""The Gluon forward's document work items (kernels/attention/gluon_walk.document_items), built on the host
with torch ops: a list the kernel claims from, so a row left out or taken twice would be a wrong output on
the GPU only. These check the list on the CPU."""

import pytest
import torch

pytest.importorskip("triton.experimental.gluon", reason="this Triton has no Gluon")
from kernels.attention.gluon_walk import document_items, listed_documents  # noqa: E402
from variantbench.catalog.attention import document_starts  # noqa: E402

ROWS = 128


def _documents(lengths):
    """(1, sum(lengths)) int32 document starts of documents of these lengths."""
    return torch.cat([torch.full((n,), sum(lengths[:i]), dtype=torch.int32) for i, n in enumerate(lengths)])[None]


@pytest.mark.parametrize("doc_start", [document_starts(4, 4096, seed=0), document_starts(2, 640, seed=12),
                                       _documents([1, 127, 128, 129, 1, 255, 3]), _documents([512])],
                         ids=["catalog-4096", "catalog-640", "odd-lengths", "one-document"])
def test_document_items_cover_every_row_once_longest_walk_first(doc_start):
    """Every row is in exactly one item's own rows (its start to 128 rows on or its document's end), every
    item starts a multiple of 128 rows into its document, and the walks (key tiles from the document's
    start to the item's diagonal) never grow down the list."""
    batch, seq = doc_start.shape
    items = document_items(doc_start, ROWS)
    assert items.dtype == torch.int32 and items.shape == (batch * seq + 1,)
    count = int(items[-1])
    starts = items[:count].long()
    flat = doc_start.flatten().long()
    offsets = starts % seq - flat[starts]
    assert (offsets % ROWS == 0).all()
    walks = offsets // ROWS + 1
    assert (walks[1:] <= walks[:-1]).all()
    covered = torch.zeros(batch * seq, dtype=torch.int64)
    for start in starts.tolist():
        own = torch.arange(start, min(start + ROWS, (start // seq + 1) * seq))
        own = own[flat[own] == flat[start]]  # up to its document's end
        covered[own] += 1
    assert (covered == 1).all()
    assert sorted(items[:-1].tolist()) == list(range(batch * seq))  # every position once: the kernel reads no further


def test_document_items_walk_the_counted_tiles_at_the_catalogs_documents():
    """The offline count document_items' docstring cites (llama-3-8b-s4k's catalog documents at seed 0):
    34 items and 187 key tiles a batch-head."""
    doc_start = document_starts(4, 4096, seed=0)
    items = document_items(doc_start, ROWS)
    starts = items[:int(items[-1])].long()
    walks = (starts % 4096 - doc_start.flatten().long()[starts]) // ROWS + 1
    assert len(starts) / 4 == 34 and walks.sum().item() / 4 == 187


def test_listed_documents_keeps_a_list_while_its_doc_start_is_unchanged():
    """One doc_start gives one list until it is written in place; another tensor or another row count gets
    its own; each list equals a fresh `document_items` of the values it was asked for."""
    doc_start = document_starts(2, 640, seed=12)
    doc_arg, items = listed_documents(doc_start, doc_start.device, ROWS)
    assert doc_arg is doc_start  # already int32, contiguous, on the device: no copy
    assert listed_documents(doc_start, doc_start.device, ROWS)[1] is items
    assert torch.equal(items, document_items(doc_start, ROWS))
    assert not torch.equal(listed_documents(doc_start, doc_start.device, 64)[1], items)
    doc_start[1] = 0  # the second batch row now one document
    fresh = listed_documents(doc_start, doc_start.device, ROWS)[1]
    assert torch.equal(fresh, document_items(doc_start, ROWS)) and not torch.equal(fresh, items)
    twin = doc_start.clone()
    assert listed_documents(twin, twin.device, ROWS)[1] is not fresh


def test_listed_documents_converts_and_lists_an_int64_doc_start_and_an_inference_one():
    """A doc_start the kernels cannot read as it is (int64) is listed from its int32 copy; an inference
    tensor, which has no version counter, is listed afresh every call."""
    doc_start = document_starts(2, 640, seed=3)
    wide = doc_start.long()
    doc_arg, items = listed_documents(wide, wide.device, ROWS)
    assert doc_arg.dtype == torch.int32 and torch.equal(doc_arg, doc_start)
    assert torch.equal(items, document_items(doc_start, ROWS))
    with torch.inference_mode():
        frozen = doc_start.clone()
    first, second = (listed_documents(frozen, frozen.device, ROWS)[1] for _ in range(2))
    assert first is not second and torch.equal(first, items)


def test_a_listed_doc_start_is_not_kept_alive():
    """The lists are kept by a weak reference: a doc_start no one holds any more leaves none behind."""
    import gc
    import weakref

    from kernels.attention import gluon_walk

    doc_start = document_starts(1, 256, seed=5)
    before = len(gluon_walk._listed)
    listed_documents(doc_start, doc_start.device, ROWS)
    assert len(gluon_walk._listed) == before + 1
    gone = weakref.ref(doc_start)
    del doc_start
    gc.collect()
    assert gone() is None and len(gluon_walk._listed) == before
