"""tools/probe_expert_overlap.py's split of the routed experts by load, on the CPU through the
interpreter: each part's rows, offsets and weights give, through our expert GEMMs, the whole call's
output at the rows it names, and the two parts name every routed row once. The probe's timings need a
GPU; what it times is only as right as this split."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from kernels.moe import grouped_mm, triton_experts  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from probe_expert_overlap import split, tiles  # noqa: E402


def test_the_hot_and_cold_parts_give_the_whole_calls_rows():
    gen = torch.Generator().manual_seed(3)
    # experts 4 and 6 empty; 2 and 5 hot (4 rows and more), 5's rows not all together in the input
    flat = torch.tensor([0, 0, 0, 2, 2, 2, 2, 5, 5, 5, 5, 5, 1, 3, 3, 0, 5, 7])
    n_experts, dim, ffn = 8, 32, 32
    order = torch.argsort(flat, stable=True)
    rows = torch.randn(len(flat), dim, generator=gen)[order].contiguous()
    offsets = grouped_mm.expert_offsets(flat[order], n_experts)
    w13 = torch.randn(n_experts, 2 * ffn, dim, generator=gen) / 8
    w2 = torch.randn(n_experts, dim, ffn, generator=gen) / 8
    whole = triton_experts.experts(rows, w13, w2, offsets)
    hot = torch.bincount(flat, minlength=n_experts) >= 4
    named = []
    for chosen in (hot, ~hot):
        part_rows, part_offsets, part_w13, part_w2, where = split(rows, offsets, w13, w2, chosen)
        assert part_offsets[-1] == len(where) == len(part_rows)
        got = triton_experts.experts(part_rows, part_w13, part_w2, part_offsets)
        torch.testing.assert_close(got, whole[where], rtol=0, atol=1e-6)
        named.append(where)
    assert sorted(torch.cat(named).tolist()) == list(range(len(flat)))


def test_a_part_takes_a_tiling_the_kernels_can_run_and_refuses_the_rest():
    assert tiles("16,128,64,4,3") == triton_experts.Tiles(16, 128, 64, 4, 3)
    for bad in ("16,128,64,4", "16,128,64,4,x", "8,128,64,4,3", "16,96,64,4,3", "16,128,64,0,3", "16,128,64,4,0"):
        with pytest.raises(argparse.ArgumentTypeError):
            tiles(bad)
