"""Our DSA kernels, and Flex, on one problem at a time, to find where each masked kernel crosses the gather (its
`dense_from` in triton_token_sparse, the share of the causal pairs a selection holds from which `prepare` takes it):
"masked" is the one `prepare` takes here (`masked_kernel`: the Gluon forward on Hopper), "masked-triton" our Triton
forward beside it where the two differ:
    timeout 500 python tools/probe_dsa.py --shape llama-3-8b-s16k --topk 1024 --topk 2048 --flex
For each shape and k (the catalog's seeded indexer, `token_selection`), every call's output is first checked
against a float64 reference over a sample of query rows (the selection as an explicit mask), then timed by
triton's do_bench (median) and, apart, by a CUDA-graph loop (do_bench_cudagraph, median). The last lines give the
gather's time (and the others') over the masked kernel's at each share: above 1 the masked kernel is the faster.
With --backward: forward+backward instead, ours (the masked forward and our backward, on Hopper the Gluon kernels,
`triton_token_sparse.trainable`) and Flex's, each call's gradients of the sampled rows' outputs checked against
float64 autograd of the reference first (their largest error over the largest value, q, k and v), then timed by
do_bench.
"""

import sys
from pathlib import Path

import click
import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import reference.attention as reference  # noqa: E402
from kernels.attention import flex, triton_token_sparse  # noqa: E402
from variantbench.catalog.attention import AttentionVariant, make_problem  # noqa: E402
from variantbench.shapes import ATTENTION_SHAPES, named  # noqa: E402

SAMPLE_ROWS = 64  # query rows checked against float64, spread over the sequence (the last one among them)
TOLERANCE = 2e-2  # bfloat16 outputs of unit-variance values: a wrong key moves a row by far more


def errors(variant, problem, built, rows):
    """{name: the call's max absolute error against float64 attention (reference.attention, the selection as its
    mask) over query rows `rows`}."""
    expected = reference.attention(problem.q[:, :, rows].double(), problem.k.double(), problem.v.double(),
                                   mask_mod=variant.mask_mod(problem), q_idx=rows)
    return {name: (call()[:, :, rows].double() - expected).abs().max().item() for name, call in built.items()}


def gradient_errors(variant, problem, built, rows):
    """{name: the largest of the call's q, k, v gradient errors (each over the float64 gradient's largest value)
    for a seeded gradient of the output rows `rows`, against float64 autograd of the reference}."""
    exact = [t.detach().double().requires_grad_() for t in (problem.q, problem.k, problem.v)]
    expected_out = reference.attention(exact[0][:, :, rows], exact[1], exact[2], mask_mod=variant.mask_mod(problem),
                                       q_idx=rows)
    grad = torch.randn(expected_out.shape, generator=torch.Generator(rows.device).manual_seed(1), device=rows.device,
                       dtype=torch.float64)
    expected = torch.autograd.grad(expected_out, exact, grad)
    inputs = (problem.q, problem.k, problem.v)
    found = {}
    for name, call in built.items():
        got = torch.autograd.grad(call()[:, :, rows], inputs, grad.to(problem.q.dtype))
        found[name] = max(((g.double() - e).abs().max() / e.abs().max()).item() for g, e in zip(got, expected))
    return found


def probe_backward(shape, topk, with_flex):
    """One line a forward+backward (its gradient error against float64, do_bench ms) and Flex's over ours; whether
    every call read right."""
    variant = AttentionVariant(f"dsa_topk_{topk}", topk_tokens=topk)
    problem = make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=0, requires_grad=True)
    share = triton_token_sparse.selected_share(topk, shape.q_len, shape.kv_len)
    rows = torch.linspace(0, shape.q_len - 1, SAMPLE_ROWS, device="cuda").long()
    built = {"ours": triton_token_sparse.trainable(problem.q, problem.k, problem.v, problem.selection)}
    if with_flex:
        built["flex"] = flex.prepare(variant, problem)
    inputs = [problem.q, problem.k, problem.v]
    grad = torch.randn(problem.q.shape, generator=torch.Generator("cuda").manual_seed(2), device="cuda",
                       dtype=problem.q.dtype)
    figures = {}
    for name, error in gradient_errors(variant, problem, built, rows).items():
        if not error <= TOLERANCE:
            print(f"{shape.name} k={topk} share={share:.3f} {name} forward+backward: WRONG, gradient error {error:.3g} "
                  f"of the largest against float64 (tolerance {TOLERANCE}); not timed", flush=True)
            continue
        call = built[name]
        figures[name] = triton.testing.do_bench(lambda call=call: call().backward(grad), grad_to_none=inputs,
                                                warmup=25, rep=200, return_mode="median")
        print(f"{shape.name} k={topk} share={share:.3f} {name} forward+backward: gradient error {error:.2e} of the "
              f"largest, do_bench {figures[name]:.4f} ms", flush=True)
    if {"ours", "flex"} <= figures.keys():
        print(f"{shape.name} k={topk} share={share:.3f} forward+backward: flex / ours "
              f"{figures['flex'] / figures['ours']:.3f}", flush=True)
    del problem
    torch.cuda.empty_cache()
    return len(figures) == len(built)


def timed(call):
    """(do_bench median ms, CUDA-graph median ms or why none)."""
    ms = triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median")
    try:
        graph = triton.testing.do_bench_cudagraph(call, rep=200, return_mode="median")
    except RuntimeError as error:
        torch.cuda.synchronize()
        graph = f"no CUDA graph: {str(error).splitlines()[0]}"
    return ms, graph


def calls(variant, problem, with_flex):
    """{name: the launch-only call}, each built and launched once."""
    masked = triton_token_sparse.masked_kernel(problem.q, problem.k, problem.v)
    built = {"masked": masked.launch(problem.q, problem.k, problem.v, problem.selection)}
    if masked is not triton_token_sparse.TRITON_MASKED:
        built["masked-triton"] = triton_token_sparse.triton_masked_launch(problem.q, problem.k, problem.v,
                                                                         problem.selection)
    built["gather"] = triton_token_sparse.gather_launch(variant, problem)
    if with_flex:
        built["flex"] = flex.prepare(variant, problem)
    return built


def probe(shape, topk, with_flex):
    """One line a call (its error against float64, do_bench and graph ms) and the gather over the masked; whether
    every call read right."""
    variant = AttentionVariant(f"dsa_topk_{topk}", topk_tokens=topk)
    problem = make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=0)
    share = triton_token_sparse.selected_share(topk, shape.q_len, shape.kv_len)
    rows = torch.linspace(0, shape.q_len - 1, SAMPLE_ROWS, device="cuda").long()
    built = calls(variant, problem, with_flex)
    figures = {}
    for name, error in errors(variant, problem, built, rows).items():
        if not error <= TOLERANCE:
            print(f"{shape.name} k={topk} share={share:.3f} {name}: WRONG, max error {error:.3g} against float64 "
                  f"over {SAMPLE_ROWS} rows (tolerance {TOLERANCE}); not timed", flush=True)
            continue
        ms, graph = timed(built[name])
        figures[name] = ms
        graph_text = f"{graph:.4f}" if isinstance(graph, float) else graph
        print(f"{shape.name} k={topk} share={share:.3f} {name}: max error {error:.2e}, do_bench {ms:.4f} ms, "
              f"CUDA graph {graph_text} ms", flush=True)
    if "masked" in figures:
        over = [f"{name} / masked {ms / figures['masked']:.3f}" for name, ms in figures.items() if name != "masked"]
        print(f"{shape.name} k={topk} share={share:.3f}: {', '.join(over)}", flush=True)
    del problem
    torch.cuda.empty_cache()
    return len(figures) == len(built)


@click.command(help=__doc__)
@click.option("--shape", "shapes", multiple=True, default=("llama-3-8b-s16k",), show_default=True,
              help="an attention shape of variantbench.shapes (repeatable)")
@click.option("--topk", "topks", multiple=True, type=click.IntRange(min=1), default=(1024, 2048), show_default=True,
              help="keys each query reads (repeatable)")
@click.option("--flex/--no-flex", default=False, show_default=True, help="time Flex on the same problem too")
@click.option("--backward", is_flag=True, help="forward+backward: ours (masked) and, with --flex, Flex's")
def main(shapes, topks, flex, backward):
    if not torch.cuda.is_available():
        raise click.ClickException("no CUDA device: this probe times GPU kernels")
    try:
        resolved = [named(ATTENTION_SHAPES, name, "attention shape") for name in shapes]
    except (KeyError, ValueError) as error:
        raise click.BadParameter(error.args[0], param_hint="--shape")
    wrong = [f"{shape.name} k={topk}" for shape in resolved for topk in topks
             if not (probe_backward if backward else probe)(shape, topk, flex)]
    if wrong:  # a lane's step reads the exit code
        raise click.ClickException(f"a call read wrong against float64 at {', '.join(wrong)} (lines above)")


if __name__ == "__main__":
    main()
