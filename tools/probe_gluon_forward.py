"""Our Gluon forward (kernels/attention/gluon_flash.py) on a GPU beside our Triton forward and SDPA (cuDNN)
at llama-3-8b-s4k (B4, Hq 32, Hkv 8 (causal_mha: 32, the catalog's multi-head `causal`), S 4096, D 128,
bfloat16), the document mask the catalog's:
    python tools/probe_gluon_forward.py [--graph] [--rounds N] [VARIANT ...]   (default: every variant in VARIANTS)
For each variant, first the two kernels' outputs against each other (and cuDNN's where SDPA runs the
variant: causal, causal_mha, full), max difference, so a wrong kernel shows here and not as a speed; then each
timed by triton's do_bench (median) in TFLOP/s on the variant's visible pairs.

With --rounds N every call is timed once a round, round-robin over all the variants, and each reads the median
of its N rounds (with their range, and each Gluon variant's cost per visible pair against Gluon causal's,
paired round by round), so a drift over the run weighs on every call alike. Timed one variant after another, a
call's figure depended on its place in the run: causal 0.9256 ms first, 1.0092 after about 60 s of other
variants (session 40, H200). With --graph each is also
timed by triton's do_bench_cudagraph (the calls captured in a CUDA graph and replayed, no host between them;
tools/try_truth.py's graph loop), a second measurement of the same call; session 33's figures came from a
hand-written loop of 20 calls a graph that this replaced (8a5f1f8). Run it under `timeout`: a kernel whose
mbarriers never complete hangs rather than fails.
"""

import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kernels.attention import gluon_flash, triton_flash  # noqa: E402
from variantbench.catalog.attention import DOCUMENT_STRUCTURE_SEED, document_starts  # noqa: E402

BATCH, Q_HEADS, KV_HEADS, SEQ, DIM = 4, 32, 8, 4096, 128
PREFIX, WINDOW = 1024, 1024  # the catalog's prefix_lm and sliding_window_1024
VARIANTS = {"causal": dict(causal=True), "causal_mha": dict(causal=True, kv_heads=Q_HEADS),  # the catalog's `causal`
            "full": dict(causal=False), "softcap_50": dict(causal=True, softcap=50.0),
            "alibi": dict(causal=True, alibi=True), "prefix_lm": dict(causal=True, prefix=PREFIX),
            "sliding_window_1024": dict(causal=True, window=WINDOW),
            "document": dict(causal=True, doc_start=document_starts(BATCH, SEQ, DOCUMENT_STRUCTURE_SEED))}


def visible_pairs(options):
    if not options["causal"]:
        return SEQ * SEQ
    if options.get("doc_start") is not None:  # a row sees its document's keys up to itself; a sequence's mean
        starts = options["doc_start"]
        return (torch.arange(SEQ, device=starts.device) - starts + 1).sum().item() / BATCH
    pairs = SEQ * (SEQ + 1) // 2
    if options.get("window"):  # a row sees itself and the window - 1 keys before it
        return WINDOW * (WINDOW + 1) // 2 + (SEQ - WINDOW) * WINDOW
    prefix = options.get("prefix")
    return pairs + (prefix * (prefix - 1) // 2 if prefix else 0)  # the prefix's rows also see later prefix keys


def graph_ms(call):
    """do_bench_cudagraph's median ms of `call`, or why a CUDA graph cannot capture it (one line)."""
    try:
        return triton.testing.do_bench_cudagraph(call, rep=200, return_mode="median")
    except RuntimeError as error:
        torch.cuda.synchronize()
        return f"no CUDA graph: {str(error).splitlines()[0]}"


def paired_ratios(times, flops, reference="causal", what="gluon"):
    """{variant: the median over rounds of its `what` call's ms a visible pair over the reference variant's, that
    round's}: times maps (variant, implementation) to one ms a round, flops a variant to its visible FLOPs."""
    if (reference, what) not in times:
        return {}
    base = [ms / flops[reference] for ms in times[reference, what]]
    return {name: statistics.median(ms / flops[name] / b for ms, b in zip(rounds, base))
            for (name, implementation), rounds in times.items() if implementation == what and name != reference}


def summary(times, flops):
    """The lines of a timed run: each call's median ms and TFLOP/s (the format tools/lanes.sh's under_main
    reads: ms fourth from the end), and with more than one round its range and the paired ratios."""
    lines = []
    for (name, what), rounds in times.items():
        ms = statistics.median(rounds)
        lines.append(f"  {name:10} {what:14} {ms:8.4f} ms {flops[name] / ms / 1e9:6.0f} TFLOP/s")
    if any(len(rounds) > 1 for rounds in times.values()):
        lines += [f"  range {name} {what}: {min(rounds):.4f}-{max(rounds):.4f} ms over {len(rounds)} rounds"
                  for (name, what), rounds in times.items()]
        lines += [f"  per visible pair, gluon {name} against gluon causal: {ratio:.3f}x (median of paired rounds)"
                  for name, ratio in paired_ratios(times, flops).items()]
    return lines


def prepared(names):
    """{variant: (its calls by implementation, its visible FLOPs)}, each call's output checked against our Triton
    forward's (the differences printed) before anything is timed."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(BATCH, Q_HEADS, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
    variants = {}
    for name in names:
        options = {key: value.cuda() if torch.is_tensor(value) else value for key, value in VARIANTS[name].items()}
        kv_heads = options.pop("kv_heads", KV_HEADS)  # once: popped inside the generator, v got KV_HEADS (s27)
        k, v = (torch.randn(BATCH, kv_heads, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
                for _ in range(2))
        calls = {"ours (Triton)": triton_flash.forward_launcher(q, k, v, **options),
                 "gluon": gluon_flash.forward_launcher(q, k, v, **options)}
        if set(options) == {"causal"}:
            def cudnn(causal=options["causal"], k=k, v=v):
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
            calls = {"sdpa (cuDNN)": cudnn, **calls}
        expected = calls["ours (Triton)"]()
        for what, call in calls.items():
            got = call()
            torch.cuda.synchronize()
            print(f"  {name:10} {what:14} max diff from ours (Triton) "
                  f"{(got.float() - expected.float()).abs().max().item():.2e}", flush=True)
        variants[name] = calls, 4 * BATCH * Q_HEADS * DIM * visible_pairs(options)
    return variants


def main(names, graph=False, rounds=1):
    variants = prepared(names)
    flops = {name: variant_flops for name, (_, variant_flops) in variants.items()}
    times = {(name, what): [] for name, (calls, _) in variants.items() for what in calls}
    for done in range(1, rounds + 1):  # round-robin: a drift over the run falls on every call alike
        for name, (calls, _) in variants.items():
            for what, call in calls.items():
                times[name, what].append(triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median"))
        # every round's medians so far, so a run cut short by a lease's limit keeps them (the last lines count)
        print(f"after round {done} of {rounds}:\n" + "\n".join(summary(times, flops)), flush=True)
    for name, (calls, variant_flops) in variants.items() if graph else ():
        for what, call in calls.items():
            ms = graph_ms(call)  # a call the graph cannot capture: said, and the next one timed
            shown = (f"{ms:8.4f} ms {variant_flops / ms / 1e9:6.0f} TFLOP/s  (CUDA graph)" if isinstance(ms, float)
                     else ms)
            print(f"  {name:10} {what:14} {shown}", flush=True)


def unknown(names):
    """One line naming the variants the probe does not know (and those it does), or None: said before any GPU
    work, where an unknown name was a KeyError's traceback after the variants before it (session 40: gqa_8)."""
    strays = [name for name in names if name not in VARIANTS]
    if strays:
        return f"probe_gluon_forward.py: no variant {', '.join(strays)}; known: {' '.join(VARIANTS)}"
    return None


def arguments(argv):
    """(variants, --graph, --rounds N) from the command line, or (None, why) for one line and exit 2."""
    names, graph, rounds = [], False, 1
    args = iter(argv)
    for arg in args:
        if arg == "--graph":
            graph = True
        elif arg == "--rounds":
            value = next(args, "")
            if not value.isdigit() or int(value) < 1:
                return None, f"probe_gluon_forward.py: --rounds takes a whole number of at least 1, not {value!r}"
            rounds = int(value)
        else:
            names.append(arg)
    refusal = unknown(names)
    return (None, refusal) if refusal else ((names or list(VARIANTS), graph, rounds), None)


if __name__ == "__main__":
    parsed, refusal = arguments(sys.argv[1:])
    if refusal:
        print(refusal, file=sys.stderr)
        sys.exit(2)
    main(*parsed)
