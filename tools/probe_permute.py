"""How fast does our MoE layer move its routed rows? A GPU probe of kernels/moe/triton_moe.py's permute
(each routed row gathered into expert order) and unpermute (each token's k expert rows gathered back and
summed with the router weights) at one MoE shape, at the module's tiling and others:

    python3 tools/probe_permute.py [SHAPE] [--variant ROUTER] [--tiling ROWS,WIDEST,WARPS ...]

Why: at DeepSeek-V3 prefill (4096 tokens x top 8, dim 7168, bfloat16) the two took 0.188 and 0.242 ms of
the layer's 9.92 on an H200 (session 36's profile), where their bytes at the copy peak take about 0.11
and 0.13 (the permute writes 470 MB and reads its 58 MB of tokens from L2 at best; the unpermute reads
470 MB and writes 58). ROWS rows a program, WIDEST columns its widest load, WARPS warps; the grid and the
load follow the module's plan (triton_moe.sliced). Each tiling is checked equal to the module's output, then timed by
do_bench (median); beside them torch's gather of the same rows (index_select), an independent figure of
what a gather reaches. Each line gives the least bytes either kernel moves (every routed row once, every
token once) a second, against the copy peak this GPU measures (variantbench.device.measured_peaks).
"""

import argparse
import sys
from pathlib import Path

import torch
from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.moe import triton_moe  # noqa: E402
from variantbench.device import measured_peaks  # noqa: E402
from routed_load import routed_load  # noqa: E402  (beside this file)

TILINGS = ["16,64,4", "16,128,4", "16,256,4", "16,512,4", "32,256,8", "8,512,4", "16,1024,8", "32,512,8",
           "8,256,4", "8,1024,4"]


def refuse(message):
    """Bad input or a missing GPU: one line on stderr, exit 2 (the project's code for it)."""
    print(f"probe_permute: {message}", file=sys.stderr)
    raise SystemExit(2)


def tiling(text):
    """(rows, widest, warps) of "16,64,4": powers of two, warps 1 to 16."""
    parts = text.split(",")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 and int(p) & (int(p) - 1) == 0 for p in parts) \
            or int(parts[2]) > 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWS,WIDEST,WARPS (powers of two, warps at most 16)")
    return tuple(int(p) for p in parts)


def timed(call):
    return do_bench(call, warmup=25, rep=200, return_mode="median")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", nargs="?", default="deepseek-v3-prefill-t4k-zipf")
    parser.add_argument("--variant", default="softmax_topk", help="the MoE variant (its router) that routes the load")
    parser.add_argument("--tiling", type=tiling, action="append", help=f"ROWS,WIDEST,WARPS (default: {TILINGS})")
    args = parser.parse_args()
    tilings = args.tiling or [tiling(t) for t in TILINGS]
    shape, variant, problem, flat, rows, _ = routed_load(args.shape, args.variant, refuse)
    x, top_k = problem.x, problem.config.top_k
    tokens, dim = x.shape
    _, source, position = triton_moe.expert_order(flat, top_k)
    weights = torch.rand(tokens, top_k, device=x.device, generator=torch.Generator(x.device).manual_seed(0))
    expert_rows = torch.randn_like(rows)  # never zeros: a gather of zeros can read as fast as anything
    want_rows = triton_moe.permute(x, source)
    want_y = triton_moe.unpermute(expert_rows, position, weights, tokens, x.dtype)
    # the least a kernel moves through memory, either way: every routed row once, every token once
    moved = (source.numel() + tokens) * dim * x.element_size()
    copy_gbps = measured_peaks("cuda")["gbps"]
    print(f"{shape.name} routed by {variant.name}: {source.numel()} rows of {dim} {x.dtype}; copy peak "
          f"{copy_gbps:.0f} GB/s; the module's tilings: permute {tuple(triton_moe.PERMUTE_TILING)}, unpermute "
          f"{tuple(triton_moe.UNPERMUTE_TILING)}, 4 warps")

    def report(label, name, ms):
        gbps = moved / ms / 1e6
        print(f"  {name:9} {label:18} {ms:.4f} ms  {gbps:6.0f} GB/s ({gbps / copy_gbps:.0%} of the copy peak)",
              flush=True)

    for rows_per, widest, warps in tilings:
        tiled = triton_moe.Tiling(rows_per, widest)
        grid, cols, block_d = triton_moe.sliced(source.numel(), dim, x.device, tiled)
        got = torch.empty_like(want_rows)

        def permute(grid=grid, cols=cols, block_d=block_d):  # this tiling's plan, bound now
            triton_moe._permute_kernel[grid](x, source, got, source.numel(), dim, cols, ROWS=rows_per,
                                             BLOCK_D=block_d, num_warps=warps)
        permute()
        if not torch.equal(got, want_rows):
            print(f"  permute   {rows_per},{widest},{warps}: differs from the module's rows; not timed")
        else:
            report(f"{rows_per},{widest},{warps}", "permute", timed(permute))
        grid, cols, block_d = triton_moe.sliced(tokens, dim, x.device, tiled)
        y = torch.empty_like(want_y)

        def unpermute(grid=grid, cols=cols, block_d=block_d):
            triton_moe._unpermute_kernel[grid](expert_rows, position, weights, y, tokens, dim, cols, TOP_K=top_k,
                                               ROWS=rows_per, BLOCK_D=block_d, num_warps=warps)
        unpermute()
        if not torch.equal(y, want_y):
            print(f"  unpermute {rows_per},{widest},{warps}: differs from the module's output; not timed")
        else:
            report(f"{rows_per},{widest},{warps}", "unpermute", timed(unpermute))
    index = source.long()
    report("torch index_select", "permute", timed(lambda: torch.index_select(x, 0, index)))


if __name__ == "__main__":
    main()
