"""What packing DSA's selection into the Gluon kernels' words costs on the GPU (gluon_selection.selection_words, or
with --keys key_words, dK/dV's): its peak memory beyond the selection and the words, and its time, at one shape's
indexer selection:
    python tools/probe_selection_words.py --shape llama-3-8b-s32k [--keys]
Run from a checkout's root: the `kernels` imported are the working directory's, so an older commit's packing is
probed by running this file from that commit's checkout. The words of sampled rows (keys) are checked through a
second, plain path: each bit of a row's tile (a key's query block) against the selection's byte."""

import os
import sys

import click
import torch
import triton

sys.path.insert(0, os.getcwd())
from kernels.attention import gluon_selection  # noqa: E402
from variantbench.catalog.attention import AttentionVariant, make_problem  # noqa: E402
from variantbench.shapes import ATTENTION_SHAPES, named  # noqa: E402

CHECKED_ROWS = 256


def bits_of(row_words, width, length):
    """A row's (key's) words back to (length,) 0/1 through the packing's definition: column 8 i + 2 q + b of a tile
    of `width` at bit 2 i + b of its word q."""
    tiles = row_words.numel() // 4
    columns = torch.arange(tiles * width, device=row_words.device)
    tile, column = columns // width, columns % width
    i, q, b = column // 8, (column % 8) // 2, column % 2
    return ((row_words.to(torch.int32)[tile * 4 + q] >> (2 * i + b)) & 1)[:length]


@click.command()
@click.option("--shape", "shape_name", default="llama-3-8b-s32k", show_default=True)
@click.option("--topk", default=2048, show_default=True)
@click.option("--device", default="cuda", show_default=True, help="cpu: the check alone (no memory figure)")
@click.option("--keys", is_flag=True, help="key_words (dK/dV's, the selection transposed) instead")
def main(shape_name, topk, device, keys):
    shape = named(ATTENTION_SHAPES, shape_name, "attention shape")
    variant = AttentionVariant(f"dsa_topk_{topk}", topk_tokens=topk)
    p = make_problem(variant, shape, device=device, dtype=torch.bfloat16, seed=0)
    selection = p.selection
    del p
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    pack = gluon_selection.key_words if keys else gluon_selection.selection_words
    words = pack(selection)
    if cuda:
        torch.cuda.synchronize()
        transient = torch.cuda.max_memory_allocated() - before - words.numel() * words.element_size()
    q_len, kv_len = selection.shape[1:]
    for row in torch.linspace(0, (kv_len if keys else q_len) - 1, CHECKED_ROWS).long().tolist():
        if keys:  # key `row`: the queries that select it, those before its position cleared
            expected = selection[0, :, row].clone()
            expected[:max(0, row - (kv_len - q_len))] = False
            got = bits_of(words[0, row], gluon_selection.QUERY_BLOCK.value, q_len)
        else:
            expected = selection[0, row].clone()
            expected[row + kv_len - q_len + 1:] = False
            got = bits_of(words[0, row], gluon_selection.TILE_KEYS.value, kv_len)
        if not torch.equal(got.bool(), expected):
            print(f"MISMATCH: {'key' if keys else 'row'} {row}'s words are not its selection")
            sys.exit(1)
    sizes = (f"{shape_name} k {topk}: selection {tuple(selection.shape)} {selection.numel() / 2**20:.0f} MiB, "
             f"{pack.__name__} {words.numel() * words.element_size() / 2**20:.0f} MiB, {CHECKED_ROWS} "
             f"{'keys' if keys else 'rows'} checked")
    if not cuda:
        print(sizes)
        return
    ms = triton.testing.do_bench(lambda: pack(selection), rep=200)
    print(f"{sizes}; transient {transient / 2**20:.0f} MiB, {ms:.2f} ms a packing (do_bench)")


if __name__ == "__main__":
    main()
