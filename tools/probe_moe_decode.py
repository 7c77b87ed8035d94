"""Our MoE layer at decode against its previous commit's and grouped_mm's, on the GPU, side by side:
each layer as a loop of CUDA-graph replays (triton's do_bench_cudagraph, as the suite replays decode)
and eagerly (do_bench), and the permute / unpermute kernels alone, new against old. The old layer is
a committed module, written beside the new by the caller (0ef7ab2: before the column slices):
    git show 0ef7ab2:kernels/moe/triton_moe.py > kernels/moe/triton_moe_before.py
    python tools/probe_moe_decode.py [shape ...]   (default: DeepSeek-V3 and Mixtral decode, zipf)
"""

import importlib
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.moe import grouped_mm, triton_moe  # noqa: E402
from variantbench.catalog import family  # noqa: E402
from variantbench.shapes import named  # noqa: E402

SHAPES = ("deepseek-v3-decode-t16-zipf", "mixtral-8x7b-decode-t16-zipf")


def timed(call):
    graph = triton.testing.do_bench_cudagraph(call, rep=300, return_mode="median")
    eager = triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median")
    return graph, eager


def probe(shape_name, before):
    moe = family("moe")
    shape = named(moe.shapes, shape_name, "shape")
    for variant in moe.variants:
        problem = moe.make_problem(variant, shape, device=torch.device("cuda"), dtype=torch.bfloat16, seed=0)
        layers = {"grouped_mm": grouped_mm.prepare_function(variant, problem),
                  "ours": triton_moe.prepare_function(variant, problem),
                  "ours before": before.prepare_function(variant, problem)}
        expected = layers["grouped_mm"](problem.x).float()
        for name, layer in layers.items():
            error = (layer(problem.x).float() - expected).abs().max().item()
            graph, eager = timed(lambda layer=layer: layer(problem.x))
            print(f"{shape_name:30} {variant.name:22} {name:12} graph {graph:8.4f} ms  eager {eager:8.4f} ms"
                  f"  max diff from grouped_mm {error:.2e}", flush=True)
    x, top_k = problem.x, problem.config.top_k
    source = torch.arange(x.shape[0] * top_k, device=x.device, dtype=torch.int32) // top_k
    rows = triton_moe.permute(x, source)
    position = torch.arange(rows.shape[0], device=x.device, dtype=torch.int32).view(-1, top_k)
    weights = torch.full(position.shape, 1.0 / top_k, device=x.device)
    for name, module in (("new", triton_moe), ("before", before)):
        permute, _ = timed(lambda m=module: m.permute(x, source))
        unpermute, _ = timed(lambda m=module: m.unpermute(rows, position, weights, x.shape[0], x.dtype))
        print(f"{shape_name:30} {name:7} permute {permute * 1e3:7.1f} us  unpermute {unpermute * 1e3:7.1f} us", flush=True)


if __name__ == "__main__":
    before = importlib.import_module("kernels.moe.triton_moe_before")
    for shape_name in sys.argv[1:] or SHAPES:
        probe(shape_name, before)
