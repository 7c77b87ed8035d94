"""Our expert GEMMs' tile sizes, swept on the GPU at one MoE shape's routed load: each configuration of
kernels/moe/triton_experts.py's gate_up and down timed alone by do_bench on the same rows, offsets and
weights, checked first against torch._grouped_mm's result (a wrong configuration is reported, never
timed as a win). The module's tilings were chosen by this (session 18); it says whether another would now do better.

    python3 tools/sweep_expert_gemm.py [shape] [--variant ROUTER]

Defaults: deepseek-v3-prefill-t4k-zipf routed by softmax_topk, the load session 18's figures (in the
module's comments) were measured on.
"""

import argparse
import functools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.moe import triton_experts  # noqa: E402
from kernels.moe.triton_experts import Tiles  # noqa: E402
from routed_load import routed_load  # noqa: E402  (beside this file)

# Tilings (rows, columns, depth a step, warps, stages); the first of each was 90f2582's. gate_up keeps
# two accumulators, so its n stays at 128 or under (2 x 128 x 128 float32 over 8 warps is 128
# registers a thread). The deeper pipelines last (session 19): through the copy engine 64 x 128 x 64
# takes 40 KB a stage in gate_up (5 stages: 200 KB of the 227 KB of shared memory), 24 KB in down.
GATE_UP = [Tiles(64, 128, 64, 8, 3), Tiles(64, 128, 64, 4, 4), Tiles(64, 64, 64, 4, 4), Tiles(64, 64, 128, 4, 3),
           Tiles(128, 128, 64, 8, 3), Tiles(128, 128, 64, 8, 4), Tiles(128, 64, 64, 8, 4), Tiles(128, 64, 128, 8, 3),
           Tiles(64, 128, 128, 8, 2), Tiles(64, 128, 64, 4, 5)]
DOWN = [Tiles(64, 128, 64, 4, 4), Tiles(64, 128, 64, 8, 4), Tiles(64, 256, 64, 8, 3), Tiles(128, 128, 64, 8, 4),
        Tiles(128, 256, 64, 8, 3), Tiles(64, 128, 128, 4, 3), Tiles(128, 128, 128, 8, 3), Tiles(64, 64, 128, 4, 4),
        Tiles(64, 128, 64, 4, 6), Tiles(64, 128, 64, 4, 8)]


def refuse(message):
    """Bad input or a missing GPU: one line on stderr, exit 2 (the project's code for it)."""
    print(f"sweep_expert_gemm: {message}", file=sys.stderr)
    raise SystemExit(2)


def sweep(name, tilings, launch, expected, weight_bytes):
    """launch(tiles): the kernel's output at that tiling. The GB/s count every expert's weights, so
    they mean bandwidth only where every expert is reached (prefill)."""
    print(f"{name}: {'tiling (m, n, k, warps, stages)':34s} {'ms':>8s} {'GB/s of weights':>16s} max error")
    for tiles in tilings:
        config, run = tuple(tiles), functools.partial(launch, tiles)
        try:
            got = run()
        except Exception as error:  # a configuration over the shared memory or registers: say so, go on
            print(f"  {str(config):34s} failed: {str(error).splitlines()[0][:90]}")
            continue
        error = (got.float() - expected.float()).abs().max().item()
        if error > 0.05 * expected.float().abs().max().item():
            print(f"  {str(config):34s} WRONG: max error {error:.3g}")
            continue
        ms = do_bench(run, warmup=25, rep=200)
        print(f"  {str(config):34s} {ms:8.3f} {weight_bytes / ms / 1e6:16.0f} {error:.3g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", nargs="?", default="deepseek-v3-prefill-t4k-zipf")
    parser.add_argument("--variant", default="softmax_topk", help="the MoE variant (its router) that routes the load")
    args = parser.parse_args()
    shape, variant, problem, flat, rows, offsets = routed_load(args.shape, args.variant, refuse)
    config = problem.config
    w13, w2 = problem.w13, problem.w2
    gate, up = torch._grouped_mm(rows, w13.transpose(-2, -1), offs=offsets).chunk(2, dim=-1)
    hidden = F.silu(gate) * up
    out = torch._grouped_mm(hidden, w2.transpose(-2, -1), offs=offsets)
    print(f"{shape.name}: {rows.shape[0]} routed rows over {config.n_experts} experts, "
          f"hottest {int(torch.bincount(flat, minlength=config.n_experts).max())}")
    for label, call in (("torch gate|up", lambda: torch._grouped_mm(rows, w13.transpose(-2, -1), offs=offsets)),
                        ("torch down", lambda: torch._grouped_mm(hidden, w2.transpose(-2, -1), offs=offsets))):
        print(f"  {label:34s} {do_bench(call, warmup=25, rep=200):8.3f} ms")
    sweep("gate_up", GATE_UP, lambda tiles: triton_experts.gate_up(rows, w13, offsets, tiles), hidden,
          w13.numel() * w13.element_size())
    sweep("down", DOWN, lambda tiles: triton_experts.down(hidden, w2, offsets, tiles), out,
          w2.numel() * w2.element_size())


if __name__ == "__main__":
    main()
