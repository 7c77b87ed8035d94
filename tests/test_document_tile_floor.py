"""tools/document_tile_floor.py: the pairs a tiled kernel computes under the document mask, counted as our
Gluon forward lists its document items (gluon_walk.document_items)."""

import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import document_tile_floor as tool  # noqa: E402
from kernels.attention.gluon_walk import document_items  # noqa: E402
from variantbench.catalog.attention import DOCUMENT_STRUCTURE_SEED, document_starts  # noqa: E402


@pytest.mark.parametrize("batch,seq", [(4, 4096), (2, 640), (3, 1000)])
def test_the_count_is_the_gluon_forwards_items_walk(batch, seq):
    doc_start = document_starts(batch, seq, DOCUMENT_STRUCTURE_SEED)
    items = document_items(doc_start, 128)
    flat = items[: int(items[-1])].long()
    walked = ((flat % seq - doc_start.flatten()[flat]) // 128 + 1).sum().item()  # _document_item's n_tiles
    counted = sum(tool.computed_pairs(a, e, 128, 128) for a, e in tool.documents(doc_start))
    assert counted == walked * 128 * 128


def test_one_document_a_sequence_is_causal():
    doc_start = torch.zeros(2, 1000, dtype=torch.int32)
    assert tool.floor(doc_start, 128, 128)[2] == 1.0


def test_the_catalogs_documents_at_llama_3_8b_s4k():
    waste, causal, quotient = tool.floor(document_starts(4, 4096, DOCUMENT_STRUCTURE_SEED), 128, 128)
    assert (round(waste, 3), round(causal, 3), round(quotient, 3)) == (1.201, 1.031, 1.165)


def test_a_tile_that_is_not_rows_x_keys_is_one_usage_line():
    result = CliRunner().invoke(tool.main, ["--tiles", "128x128,128by64"])
    assert result.exit_code == 2 and "'128by64' is not ROWSxKEYS" in result.output


@pytest.mark.parametrize("diagonals,widths", [((), (128, 128, 128, 128)), ((64,), (64, 64, 128, 128)),
                                              ((32, 64), (32, 64, 128, 128)), ((32, 64, 96), (32, 64, 96, 128)),
                                              ((64, 256), (64, 64, 128, 128)), ((128,), (128, 128, 128, 128))])
def test_a_diagonal_tile_is_computed_at_the_narrowest_width_holding_its_rows_keys(diagonals, widths):
    """A document of 100 positions in items of 32: four items walking one key tile each, whose rows see keys up to
    32, 64, 96 and 100 of it; a width of the whole tile or more is the whole tile."""
    assert tool.computed_pairs(7, 107, 32, 128, diagonals) == 32 * sum(widths)


@pytest.mark.parametrize("batch,seq", [(4, 4096), (2, 640), (3, 1000)])
def test_half_diagonals_are_the_items_the_gluon_forward_narrows(batch, seq):
    """--diagonals 64 at 32 positions an item counts the pairs of the items gluon_walk.takes_half_diagonal narrows
    (positions in the first half of their diagonal key tile: (q_pos0 - key0) % 128 + 32 <= 64), item by item."""
    doc_start = document_starts(batch, seq, DOCUMENT_STRUCTURE_SEED)
    items = document_items(doc_start, 32)
    flat = items[: int(items[-1])].long()
    offset = flat % seq - doc_start.flatten()[flat]
    halves = offset % 128 + 32 <= 64
    walked = (offset // 128 + 1) * 128 - torch.where(halves, 64, 0)  # keys an item's rows are computed against
    counted = sum(tool.computed_pairs(a, e, 32, 128, (64,)) for a, e in tool.documents(doc_start))
    assert counted == walked.sum().item() * 32


def test_the_diagonals_at_the_packed_items_of_llama_3_8b_s4k():
    """The counts the kernels' docstrings cite: 32 positions an item (4 query heads a KV head), whole diagonals,
    session 38's half diagonals, and diagonals at 32 or 64 keys."""
    doc_start = document_starts(4, 4096, DOCUMENT_STRUCTURE_SEED)
    assert [round(tool.floor(doc_start, 32, 128, diagonals)[0], 3) for diagonals in ((), (64,), (32, 64))] == [
        1.139, 1.085, 1.071]


@pytest.mark.parametrize("value,named", [("32,0", "'0'"), ("64,\u00b2", "'\u00b2'")])
def test_a_width_that_is_not_a_positive_integer_is_one_usage_line(value, named):
    result = CliRunner().invoke(tool.main, ["--diagonals", value])
    assert result.exit_code == 2 and f"{named} is not a width in keys" in result.output
