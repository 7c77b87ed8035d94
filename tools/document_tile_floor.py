"""How close to causal's cost per useful FLOP a tiled kernel can bring the document mask, on the CPU:
    python tools/document_tile_floor.py [--batch 4] [--seq 4096] [--tiles 128x128,64x128,128x64,64x64]
                                        [--diagonals 32,64]
For the catalog's documents (catalog.attention.DOCUMENT_STRUCTURE_SEED) and each tile shape (query rows x
keys), the query-key pairs a kernel computes, against the pairs the mask lets through: every document split
into row tiles from its own start, each tile walking its document's key tiles up to its diagonal (our Gluon
forward's document items, gluon_walk.document_items). The same for plain causal attention over the whole
sequence. Their quotient is the floor of the documents' ratio to causal's per useful FLOP: what a kernel
reaches whose tiles all cost what causal's do and whose items cost nothing more, causal with the documents'
own heads (grouped at llama-3-8b-s4k: gqa_8). There, 128 x 128 tiles compute 1.201x the visible pairs where
causal computes 1.031x: 1.165x, with gqa_8 at 0.912-0.915x the baseline a floor of about 1.06 (session 34).
With --diagonals, each diagonal key tile is computed at the narrowest given width that holds its rows' keys
(`computed_pairs`): at 32 positions an item (our packed items), 1.139x, 1.085x at 64 (our half diagonals, session
38), 1.071x at 32 or 64 (session 39).
"""

import math
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from variantbench.catalog.attention import DOCUMENT_STRUCTURE_SEED, document_starts  # noqa: E402


def documents(doc_start):
    """[(start, end)] of every document of every sequence of doc_start ((B, S) document starts)."""
    seq = doc_start.shape[1]
    spans = []
    for row in doc_start.tolist():
        starts = sorted(set(row))
        spans += list(zip(starts, starts[1:] + [seq]))
    return spans


def computed_pairs(start, end, rows, keys, diagonals=()):
    """Pairs the tiles of one causal document [start, end) compute, its row tiles from its start: each walks its
    document's key tiles up to the one holding its rows, that diagonal tile at the narrowest of the `diagonals`
    widths under `keys` that holds the keys its rows see (their offset in it plus `rows`), else whole: our Gluon
    forward's half diagonals (gluon_walk.takes_half_diagonal) are (64,) at 32 rows an item."""
    total = 0
    for first in range(start, end, rows):
        tiles = math.ceil((min(first + rows, end) - start) / keys)
        seen = (first - start) % keys + rows
        total += rows * (keys * (tiles - 1) + min([w for w in diagonals if seen <= w < keys], default=keys))
    return total


def visible_pairs(start, end):
    length = end - start
    return length * (length + 1) // 2


def floor(doc_start, rows, keys, diagonals=()):
    """(documents' computed / visible pairs, causal's, their quotient) at rows x keys tiles, the documents'
    diagonal tiles at `diagonals`' widths (`computed_pairs`; causal's whole)."""
    spans = documents(doc_start)
    waste = (sum(computed_pairs(a, e, rows, keys, diagonals) for a, e in spans)
             / sum(visible_pairs(a, e) for a, e in spans))
    seq = doc_start.shape[1]
    causal = computed_pairs(0, seq, rows, keys) / visible_pairs(0, seq)
    return waste, causal, waste / causal


def widths(ctx, param, value):
    """(32, 64) of "32,64" ("" for none); a usage error naming the one that is not a positive integer."""
    if value.strip() == "":
        return ()
    parts = value.split(",")
    for width in parts:
        if not width.isdecimal() or int(width) == 0:
            raise click.BadParameter(f"{width!r} is not a width in keys (a positive integer, e.g. 64)")
    return tuple(sorted(map(int, parts)))


def tile_shapes(ctx, param, value):
    """[(rows, keys)] of "128x128,64x128"; a usage error naming the one that is not ROWSxKEYS."""
    shapes = []
    for tile in value.split(","):
        rows, _, keys = tile.partition("x")
        if not (rows.isdecimal() and keys.isdecimal() and int(rows) > 0 and int(keys) > 0):
            raise click.BadParameter(f"{tile!r} is not ROWSxKEYS (positive integers, e.g. 128x128)")
        shapes.append((int(rows), int(keys)))
    return shapes


@click.command()
@click.option("--batch", default=4, show_default=True, help="sequences (llama-3-8b-s4k: 4)")
@click.option("--seq", default=4096, show_default=True, help="tokens a sequence")
@click.option("--tiles", default="128x128,64x128,128x64,64x64", show_default=True,
              callback=tile_shapes, help="tile shapes, query rows x keys, comma-separated")
@click.option("--diagonals", default="", callback=widths,
              help="the widths (keys) a diagonal key tile may be computed at, comma-separated, e.g. 32,64 "
                   "(session 38's half diagonals: 64); each at the narrowest that holds its rows' keys, else whole")
def main(batch, seq, tiles, diagonals):
    doc_start = document_starts(batch, seq, DOCUMENT_STRUCTURE_SEED)
    print(f"{len(documents(doc_start))} documents in {batch} x {seq} tokens"
          + (f", diagonal key tiles at {', '.join(map(str, diagonals))} keys or whole" if diagonals else ""))
    for rows, keys in tiles:
        waste, causal, quotient = floor(doc_start, rows, keys, diagonals)
        print(f"  {rows:4} x {keys:<4} documents {waste:.3f}x their visible pairs, causal {causal:.3f}x: "
              f"floor {quotient:.3f}x causal's cost per useful FLOP")


if __name__ == "__main__":
    main()
