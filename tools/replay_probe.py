"""The suite's timed body for short calls (variantbench.replay) against an independent CUDA-graph loop,
on one GPU. DESIGN.md: every new figure is checked once against an independent measurement of the same
call; within 5%. Per case, microseconds per call:
  eager   asv's body over the plain call, as the suite timed every call before variantbench.replay
  graph   asv's body over a checked graph of the suite's length on the suite's input sets, built even
          where the suite keeps eager calls (or why the graph is refused)
  suite   asv's body over what variantbench.replay chose; its mode and why are printed below it
  loop    the probe's own: input sets drawn at other seeds, one torch.cuda.graph of the suite's length
          written here, replayed REPLAYS times between two CUDA events (median of ROUNDS)
asv's body is timed as asv times it: synchronise, run, synchronise, divide by the calls it ran; after
0.5 s of warm-up, as the suite's Benchmark.warmup_time.
    python tools/replay_probe.py [family variant implementation shape ...]
Default: at llama-3-8b-decode-kv8k, mqa through SDPA (67 MB moved, replayed over 2 input sets) and our
Triton kernel (over 100 us on the device: eager), gqa_8 through our Triton kernel (537 MB: one set);
MoE softmax_topk through our Triton kernels at qwen3-moe-decode-t16-zipf (its routing synchronises
with the host: no graph captures it).
On a lent H200 (torch 2.11, triton 3.6) it printed, us per call, eager / graph / suite / loop:
mqa sdpa 80.3 / 29.1 / 28.9 / 27.1 (+6.8%; the suite's own process read 25.7), mqa flex 178.0 / 36.4 /
36.3 / 36.2 (+0.2%), mqa triton 117.5 / 113.7 / 118.5 / 113.4 (+4.5%, eager), gqa_8 triton 127.6 /
123.2 / 126.9 / 123.1 (+3.1%, eager), MoE triton 845 / refused / 813 / refused.
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from variantbench import cases, replay, timing  # noqa: E402
from variantbench.catalog import family  # noqa: E402

SAMPLES = 10  # asv's samples per figure (suite/common.py Benchmark.repeat)
WARMUP_S = 0.5
REPLAYS = 50
ROUNDS = 5
LOOP_SEED = 100  # the loop's own input sets: seeds the suite's copies (1, 2, ...) never reach
DEFAULT = ["attention", "mqa", "sdpa", "llama-3-8b-decode-kv8k",
           "attention", "mqa", "triton", "llama-3-8b-decode-kv8k",
           "attention", "gqa_8", "triton", "llama-3-8b-decode-kv8k",
           "moe", "softmax_topk", "triton", "qwen3-moe-decode-t16-zipf"]


def asv_us(call, device):
    """us per operation of `timing.batched(call)`, median of SAMPLES samples, as asv times them."""
    body = timing.batched(call, device)
    per_sample = timing._calls_per_sample
    t_end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < t_end:
        body()
    samples = []
    for _ in range(SAMPLES):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        body()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) * 1e6 / per_sample)
    return statistics.median(samples)


def loop_us(case, call, sets, count):
    """us per call of an independent graph loop, or why it could not capture."""
    fam, impl = family(case.family), case.implementation.load()
    calls = [call] + [
        impl.prepare(case.variant, fam.make_problem(case.variant, case.shape, device="cuda", dtype=case.dtype,
                                                    seed=LOOP_SEED + i))
        for i in range(1, sets)]
    stream = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(stream)
    with torch.cuda.stream(side):
        for c in calls:
            c()
    stream.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for i in range(count):
                calls[i % sets]()
    except RuntimeError as error:
        return f"capture failed: {cases.first_line(error)}"
    finally:
        torch.cuda.set_stream(stream)
    for _ in range(5):
        graph.replay()
    rounds = []
    for _ in range(ROUNDS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(REPLAYS):
            graph.replay()
        end.record()
        end.synchronize()
        rounds.append(start.elapsed_time(end) * 1e3 / (REPLAYS * count))
    return statistics.median(rounds)


def figure(value):
    return f"{value:10.2f}" if isinstance(value, float) else f"{'refused':>10}"


def main(quads):
    probes = [cases.resolve(*quad, "cuda") for quad in quads]  # a bad name fails before any GPU work
    dev = torch.device("cuda", torch.cuda.current_device())
    cuda = replay.CudaDevice(dev)
    print(f"{torch.cuda.get_device_name()}, L2 {cuda.l2_bytes() / 2**20:.0f} MiB")
    print(f"{'case':58} {'eager':>10} {'graph':>10} {'suite':>10} {'loop':>10} {'suite/loop':>10}")
    for case in probes:
        problem, call, _ = cases.prepare_checked(case)
        eager = asv_us(call, dev)
        timed, mode = replay.for_case(case, problem, call, cuda)
        suite = asv_us(timed, dev)
        calls = replay.with_copies(call, replay.copier(case, problem), mode.input_sets)
        call_ms, _ = timing.issue_and_call_ms(call, dev)
        count = mode.graph_calls or timing.graph_calls(call_ms, len(calls))
        refused = cuda.host_sync(call)
        graph = None
        if refused is None:
            graph, refused = replay.checked_graph(cuda, calls, count)
        graphed = asv_us(replay.Replay(graph, count), dev) if graph is not None else refused
        loop = loop_us(case, call, len(calls), count)
        ratio = f"{suite / loop - 1:+10.1%}" if isinstance(loop, float) else f"{'-':>10}"
        print(f"{case.name:58} {eager:10.2f} {figure(graphed)} {suite:10.2f} {figure(loop)} {ratio}", flush=True)
        print(f"    suite: cuda_graph={mode.cuda_graph} graph_calls={mode.graph_calls} input_sets={mode.input_sets}; "
              f"{mode.why}")
        for what, value in (("graph", graphed), ("loop", loop)):
            if not isinstance(value, float):
                print(f"    {what}: {value}")


if __name__ == "__main__":
    args = sys.argv[1:] or DEFAULT
    if len(args) % 4:
        sys.exit("replay_probe: give cases as family variant implementation shape, four names each")
    main([tuple(args[i:i + 4]) for i in range(0, len(args), 4)])
