"""The Gluon forward's document work items (kernels/attention/gluon_walk.document_items), built on the host
with torch ops: a list the kernel claims from, so a row left out or taken twice would be a wrong output on
the GPU only. These check the list on the CPU."""

import pytest
import torch

pytest.importorskip("triton.experimental.gluon", reason="this Triton has no Gluon")
from kernels.attention.gluon_walk import document_items  # noqa: E402
from variantbench.catalog.attention import document_starts  # noqa: E402

ROWS = 128
TILE_N = 128  # keys a tile of the forward's walk


def _documents(lengths):
    """(1, sum(lengths)) int32 document starts of documents of these lengths."""
    return torch.cat([torch.full((n,), sum(lengths[:i]), dtype=torch.int32) for i, n in enumerate(lengths)])[None]


@pytest.mark.parametrize("doc_start", [document_starts(4, 4096, seed=0), document_starts(2, 640, seed=12),
                                       _documents([1, 127, 128, 129, 1, 255, 3]), _documents([512])],
                         ids=["catalog-4096", "catalog-640", "odd-lengths", "one-document"])
@pytest.mark.parametrize("rows", [128, 64, 32, 16])  # positions an item: gluon_walk.document_pack 1, 2, 4, 8
def test_document_items_cover_every_row_once_longest_walk_first(doc_start, rows):
    """Every row is in exactly one item's own rows (its start to `rows` rows on or its document's end), every
    item starts a multiple of `rows` into its document, and the walks (key tiles from the document's start to
    the item's diagonal) never grow down the list."""
    batch, seq = doc_start.shape
    items = document_items(doc_start, rows)
    assert items.dtype == torch.int32 and items.shape == (batch * seq + 1,)
    count = int(items[-1])
    starts = items[:count].long()
    flat = doc_start.flatten().long()
    offsets = starts % seq - flat[starts]
    assert (offsets % rows == 0).all()
    walks = offsets // TILE_N + 1
    assert (walks[1:] <= walks[:-1]).all()
    covered = torch.zeros(batch * seq, dtype=torch.int64)
    for start in starts.tolist():
        own = torch.arange(start, min(start + rows, (start // seq + 1) * seq))
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


def test_packed_document_items_walk_the_counted_tiles_at_the_catalogs_documents():
    """The offline count gluon_walk.document_pack's docstring cites: at 32 positions an item (4 query heads
    of a KV head packed, gqa_8's 32 over 8), 4176 items of 22696 key tiles over llama-3-8b-s4k's 4 x 32 heads,
    against 4352 of 23936 at 128 positions of one head."""
    doc_start = document_starts(4, 4096, seed=0)
    for rows, packs, items_walked, tiles_walked in ((32, 8, 4176, 22696), (128, 32, 4352, 23936)):
        items = document_items(doc_start, rows)
        starts = items[:int(items[-1])].long()
        walks = (starts % 4096 - doc_start.flatten().long()[starts]) // TILE_N + 1
        assert len(starts) * packs == items_walked and walks.sum().item() * packs == tiles_walked
