"""A candidate kernel: our Triton attention with one tile forced instead of autotuned.

A kernel engineer's question before changing the tuned list: is this tile right, and how far is it
from what the autotuner picks? `variantbench try --plugin tools/plugins/forced_tile.py gqa_8` checks
`triton_64x64` against the float64 reference and times it beside the family's best built-in
implementation, in one command.
"""

import triton

from kernels.attention import triton_attention
from variantbench.plugins import Kernel

# 64x64 with 4 warps: half the rows of the tuned 128-row tiles, so twice the programs and each K/V tile
# read by twice as many of them. Not in triton_flash.PREFILL_CONFIGS.
TILE_64 = triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3)


def triton_64x64(variant, problem):
    return triton_attention.prepare(variant, problem, config=TILE_64)


IMPLEMENTATIONS = (
    Kernel("attention", "triton_64x64", triton_64x64, variants=("gqa_8", "causal"), needs_triton=True),
)
