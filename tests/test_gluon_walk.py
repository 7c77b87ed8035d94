"""The Gluon forward's document work items (kernels/attention/gluon_walk.document_items), built on the host
with torch ops: a list the kernel claims from, so a row left out or taken twice would be a wrong output on
the GPU only. These check the list on the CPU."""

import pytest
import torch

pytest.importorskip("triton.experimental.gluon", reason="this Triton has no Gluon")
from kernels.attention.gluon_walk import document_items  # noqa: E402
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
