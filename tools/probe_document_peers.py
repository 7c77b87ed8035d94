"""The document mask through the fused peers that run packed sequences natively, beside ours, on a GPU:
SDPA over nested (jagged) tensors, each document one sequence, through each backend that takes them
(cuDNN's ragged kernels, flash's variable-length ones), at llama-3-8b-s4k with the catalog's documents
(B4, Hq 32, Hkv 8, S 4096, D 128, bfloat16):
    timeout 300 python tools/probe_document_peers.py
The packed (tokens, heads, D) copies a packed-sequence model holds natively are made once, outside the
timed calls. Each output is first compared with ours (max difference), then each call is timed by
triton's do_bench (median), and by do_bench_cudagraph where a graph captures it. Each figure is also
given per useful FLOP against the baseline: gqa_8's causal attention through cuDNN, timed the same way
(issue 17's documents goal, 1.10).
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kernels.attention import gluon_flash  # noqa: E402
from probe_gluon_forward import BATCH, DIM, KV_HEADS, Q_HEADS, SEQ, VARIANTS, graph_ms, visible_pairs  # noqa: E402

BACKENDS = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)


def packed(x, offsets):
    """(B, H, S, D) as a nested (documents, H, ragged S, D) tensor over a (B S, H, D) copy."""
    values = x.transpose(1, 2).reshape(-1, x.shape[1], x.shape[3]).contiguous()
    return torch.nested.nested_tensor_from_jagged(values, offsets).transpose(1, 2)


def timed(call):
    return triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median"), graph_ms(call)


def main():
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(BATCH, Q_HEADS, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
    k, v = (torch.randn(BATCH, KV_HEADS, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
            for _ in range(2))
    doc_start = VARIANTS["document"]["doc_start"].cuda()  # the catalog's documents
    starts = (torch.arange(SEQ, device="cuda") == doc_start).flatten().nonzero().flatten()  # flat b S + p
    offsets = torch.cat([starts, torch.tensor([BATCH * SEQ], device="cuda")])
    doc_pairs = BATCH * visible_pairs(dict(causal=True, doc_start=doc_start))
    causal_pairs = BATCH * visible_pairs(dict(causal=True))
    print(f"{len(starts)} documents, {doc_pairs / causal_pairs:.4f} of causal's visible pairs", flush=True)

    def baseline():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    ours = gluon_flash.forward_launcher(q, k, v, causal=True, doc_start=doc_start)
    expected = ours().float()
    nested = [packed(t, offsets) for t in (q, k, v)]
    expanded = []  # key and value heads repeated for the query heads, made once a backend refuses grouped heads
    calls = {"ours (Gluon)": ours}
    for backend in BACKENDS:
        for heads in ("gqa", "heads expanded"):
            if heads != "gqa" and not expanded:
                expanded = [nested[0]] + [packed(t.repeat_interleave(Q_HEADS // KV_HEADS, 1), offsets) for t in (k, v)]
            nq, nk, nv = nested if heads == "gqa" else expanded

            def call(backend=backend, nq=nq, nk=nk, nv=nv, gqa=heads == "gqa"):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(nq, nk, nv, is_causal=True, enable_gqa=gqa)
            name = f"{backend.name.lower()} ragged, {heads}"
            try:
                got = call()
            except RuntimeError as error:
                print(f"  {name:34} refused: {str(error).splitlines()[0][:100]}", flush=True)
                continue
            dense = got.transpose(1, 2).values().view(BATCH, SEQ, Q_HEADS, DIM).transpose(1, 2)
            print(f"  {name:34} max diff from ours {(dense.float() - expected).abs().max().item():.2e}", flush=True)
            calls[name] = call
            break  # with grouped heads taken, the expanded copy is not needed
    base_ms, base_graph = timed(baseline)
    print(f"  {'baseline gqa_8 causal (cuDNN)':34} {base_ms:8.4f} ms, graph {base_graph}", flush=True)
    for name, call in calls.items():  # the nested tensors' host work shows in do_bench's eager time, not a graph's
        ms, graph_time = timed(call)
        ratio = (ms / doc_pairs) / (base_ms / causal_pairs)
        graph = (f"graph {graph_time:.4f} ms, x baseline {(graph_time / doc_pairs) / (base_graph / causal_pairs):.3f}"
                 if isinstance(graph_time, float) and isinstance(base_graph, float) else f"graph {graph_time}")
        print(f"  {name:34} {ms:8.4f} ms ({4 * Q_HEADS * DIM * doc_pairs / ms / 1e9:4.0f} TFLOP/s useful), "
              f"x baseline per useful FLOP {ratio:.3f}; {graph}", flush=True)


if __name__ == "__main__":
    main()
