"""What packing DSA's selection into the Gluon forward's words costs on the GPU (gluon_selection.selection_words):
its peak memory beyond the selection and the words, and its time, at one shape's indexer selection:
    python tools/probe_selection_words.py --shape llama-3-8b-s32k
Run from a checkout's root: the `kernels` imported are the working directory's, so an older commit's packing is
probed by running this file from that commit's checkout. The words are checked against the checkout's own packing
of the first rows (sampled) through a second, plain path: each bit of a row's tile against the selection's byte."""

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


def bits_of(words, row_words, kv_len):
    """A row's words back to (keys,) 0/1 through the packing's definition: key 8 i + 2 q + b of a tile at bit
    2 i + b of its word q."""
    tiles = row_words.numel() // 4
    keys = torch.arange(tiles * 128, device=row_words.device)
    tile, column = keys // 128, keys % 128
    i, q, b = column // 8, (column % 8) // 2, column % 2
    return ((row_words[tile * 4 + q] >> (2 * i + b)) & 1)[:kv_len]


@click.command()
@click.option("--shape", "shape_name", default="llama-3-8b-s32k", show_default=True)
@click.option("--topk", default=2048, show_default=True)
@click.option("--device", default="cuda", show_default=True, help="cpu: the check alone (no memory figure)")
def main(shape_name, topk, device):
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
    words = gluon_selection.selection_words(selection)
    if cuda:
        torch.cuda.synchronize()
        transient = torch.cuda.max_memory_allocated() - before - words.numel() * 4
    q_len, kv_len = selection.shape[1:]
    for row in torch.linspace(0, q_len - 1, CHECKED_ROWS).long().tolist():
        expected = selection[0, row].clone()
        expected[row + kv_len - q_len + 1:] = False
        if not torch.equal(bits_of(words, words[0, row], kv_len).bool(), expected):
            print(f"MISMATCH: row {row}'s words are not its selection")
            sys.exit(1)
    sizes = (f"{shape_name} k {topk}: selection {tuple(selection.shape)} {selection.numel() / 2**20:.0f} MiB, words "
             f"{words.numel() * 4 / 2**20:.0f} MiB, {CHECKED_ROWS} rows checked")
    if not cuda:
        print(sizes)
        return
    ms = triton.testing.do_bench(lambda: gluon_selection.selection_words(selection), rep=200)
    print(f"{sizes}; transient {transient / 2**20:.0f} MiB, {ms:.2f} ms a packing (do_bench)")


if __name__ == "__main__":
    main()
