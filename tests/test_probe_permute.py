"""tools/probe_permute.py on the CPU: its tiling argument, and the permute and unpermute kernels at tilings
other than the module's, through the interpreter, giving the module's output exactly over the grid the
probe launches (triton_moe.sliced); the probe times only tilings that do so on the GPU too."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from kernels.moe import triton_moe  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from probe_permute import tiling  # noqa: E402


def test_a_tiling_is_three_powers_of_two():
    assert tiling("16,512,8") == (16, 512, 8)
    for bad in ("16,512", "16,512,8,1", "12,512,4", "16,0,4", "16,64,32", "a,64,4", "16,-64,4"):
        with pytest.raises(argparse.ArgumentTypeError, match="ROWS,WIDEST,WARPS"):
            tiling(bad)


@pytest.mark.parametrize("rows_per, widest", [(8, 32), (32, 128), (4, 1024)])
def test_other_tilings_move_the_modules_rows(rows_per, widest):
    gen = torch.Generator().manual_seed(0)
    tokens, dim, top_k = 21, 200, 3  # a partial row block and a partial load at either tiling
    x = torch.randn(tokens, dim, generator=gen)
    flat = torch.randint(0, 5, (tokens * top_k,), generator=gen)
    _, source, position = triton_moe.expert_order(flat, top_k)
    weights = torch.rand(tokens, top_k, generator=gen)
    expert_rows = torch.randn(len(source), dim, generator=gen)
    grid, cols, block_d = triton_moe.sliced(len(source), dim, x.device, triton_moe.Tiling(rows_per, widest))
    got = torch.full((len(source), dim), float("nan"))
    triton_moe._permute_kernel[grid](x, source, got, len(source), dim, cols, ROWS=rows_per, BLOCK_D=block_d)
    assert torch.equal(got, triton_moe.permute(x, source))
    grid, cols, block_d = triton_moe.sliced(tokens, dim, x.device, triton_moe.Tiling(rows_per, widest))
    y = torch.full((tokens, dim), float("nan"))
    triton_moe._unpermute_kernel[grid](expert_rows, position, weights, y, tokens, dim, cols, TOP_K=top_k,
                                       ROWS=rows_per, BLOCK_D=block_d)
    assert torch.equal(y, triton_moe.unpermute(expert_rows, position, weights, tokens, x.dtype))
