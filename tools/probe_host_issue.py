"""Where the host's time goes as it issues our attention's forward+backward eagerly, at llama-3-8b-s4k:
    python tools/probe_host_issue.py [variant ...]     (default: causal document gqa_8)
Why: session 30's asv gate logged (timing.eager_share) 30% of causal's 4.39 ms call and 82% of the
documents' 2.04 ms spent issuing it, where the forward alone issues in 8% and 35% of its call; the
documents' forward+backward then read "faster" 0.942 on a branch that does not touch them. For each variant:
  - the call and its issue back to back, as the asv log measures them (timing.issue_and_call_ms);
  - one call's issue with the GPU idle before it, the forward's and the whole step's: what the host
    itself spends (a wait on the GPU inside the call is short there, since little is queued);
  - the CUDA runtime's and driver's calls over STEPS steps (torch's profiler, host side, the final drain
    outside it): a synchronize, a pageable copy or a cudaMalloc inside a step is the host waiting on the GPU;
  - the host's functions by own time (cProfile) over STEPS steps;
  - what the pieces of a launch cost the host alone (`pieces`), each the median of PIECE_REPEATS.
"""

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from variantbench import cases, timing  # noqa: E402
from variantbench.catalog import Unsupported  # noqa: E402

SHAPE, DEVICE = "llama-3-8b-s4k", "cuda"
DEFAULT = ("causal", "document", "gqa_8")
STEPS = 20
TOP = 14
PIECE_REPEATS = 200


def host_us(call, repeats=PIECE_REPEATS, drain_every=20):
    """The median host time of one call, in microseconds, the GPU left to drain before every
    `drain_every`-th call (1: each call issued onto an idle GPU)."""
    times = []
    for i in range(repeats):
        if i % drain_every == 0:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e6)
    torch.cuda.synchronize()
    return sorted(times)[len(times) // 2]


def pieces(problem, variant):
    """(name, host us) of what an eager forward+backward's launches do each call, on the problem's tensors."""
    from kernels.attention import gluon_flash, gluon_walk, triton_attention

    q, k, v, doc_start = problem.q.detach(), problem.k.detach(), problem.v.detach(), problem.doc_start
    options = dict(causal=variant.causal, window=variant.window, prefix=variant.prefix, doc_start=doc_start,
                   softcap=variant.softcap, alibi=variant.alibi)
    layout = gluon_flash.descriptor_layout(q.dtype)
    # the forward's query tile: `pack` heads' rows under the document mask (gluon_walk.document_pack)
    pack = gluon_walk.document_pack(q, k, doc_start, variant.window, variant.prefix, variant.alibi)
    launcher = triton_attention.forward_launcher(q, k, v, **options)
    rows = [("gluon_flash.refusal(q, k, v)", host_us(lambda: gluon_flash.refusal(q, k, v))),
            ("torch.cuda.get_device_capability", host_us(lambda: torch.cuda.get_device_capability(q.device))),
            ("TensorDescriptor.from_tensor(q)", host_us(lambda: gluon_flash.TensorDescriptor.from_tensor(
                q, [1, pack, gluon_flash.BLOCK_M // 2 // pack, q.shape[-1]], layout))),
            ("triton_attention.forward_launcher(...) built", host_us(
                lambda: triton_attention.forward_launcher(q, k, v, **options))),
            ("its launcher() (allocate, describe, launch)", host_us(launcher)),
            ("torch.empty_like(q)", host_us(lambda: torch.empty_like(q)))]
    if doc_start is not None:
        rows.append(("the document items (once a launcher unless listed once: triton_attention.document_work)",
                     host_us(lambda: triton_attention.document_work(q, k, v, options))))
    return rows


def runtime_calls(step):
    """The CUDA runtime's and driver's calls over STEPS steps, by host time: (name, count a step, us a step)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(STEPS):
            step()
    torch.cuda.synchronize()  # the queued steps' drain, not a step's
    rows = [(e.key, e.count / STEPS, e.cpu_time_total / STEPS) for e in profile.key_averages()
            if e.key.startswith("cu")]
    return sorted(rows, key=lambda row: -row[2])


def own_time(step):
    """cProfile's top functions over STEPS steps, as text: by own time, then ours and Triton's launch path
    by cumulative time (where the backward's share of the issue goes). The autograd engine's C++ shows as
    its run_backward; session 30's logs show TritonAttention.backward's Python under it."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(STEPS):
        step()
    profiler.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(TOP)
    stats.sort_stats("cumulative").print_stats("kernels/attention|triton/runtime|triton/backends|variantbench", 2 * TOP)
    return text.getvalue()


def probe(variant):
    case = cases.resolve("attention", variant, "triton", SHAPE, DEVICE)
    problem, call, _ = cases.prepare_checked(case, requires_grad=True)
    step = cases.forward_backward(problem, call)
    call_ms, issue_ms = timing.issue_and_call_ms(step, problem.device)
    print(f"== {variant} ({call.backend}): {call_ms:.3f} ms a call, {issue_ms:.3f} ms to issue back to back "
          f"({timing.eager_share(call_ms, issue_ms)})", flush=True)
    with torch.no_grad():
        forward = host_us(call, STEPS, drain_every=1) / 1e3
    both = host_us(step, STEPS, drain_every=1) / 1e3
    print(f"  issue onto an idle GPU: forward alone {forward:.3f} ms, forward+backward {both:.3f} ms", flush=True)
    print("  CUDA runtime calls a step (host side):", flush=True)
    for name, count, us in runtime_calls(step)[:TOP]:
        print(f"    {us:9.1f} us {count:6.2f}x  {name[:80]}", flush=True)
    print(own_time(step), flush=True)
    print("  the pieces, host time a call:", flush=True)
    for name, us in pieces(problem, case.variant):
        print(f"    {us:9.1f} us  {name}", flush=True)


def main(variants):
    if not torch.cuda.is_available():
        print("probe_host_issue: no CUDA GPU here; it times the host's issue of GPU work", file=sys.stderr)
        return 2
    for variant in variants or DEFAULT:
        try:
            probe(variant)
        except Unsupported as error:  # an unknown name or a case this GPU cannot run: one line, the next runs
            print(f"probe_host_issue: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
