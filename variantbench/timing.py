"""Timers. GPU work is asynchronous: every figure here comes from CUDA events, or from a host clock
read only after a synchronize.

Two ways of timing, for two questions:
- `batched` + the asv timers: one call back to back, as a model runs it; asv keeps the samples.
  What `batched` runs is decided by `plan_timing` below and built by variantbench.replay: a short
  call as CUDA-graph replays, one whose working set fits in the L2 over rotated input sets.
- `alternating_blocks`: two or more calls side by side, for their ratio (cost against the baseline).

Why blocks and not finely interleaved batches. The lent H100s and H200s run at their 700 W power
cap, and the clock follows the power a kernel draws, with a lag. Run alone, cuDNN's attention
settles at ~1.70-1.74 GHz and our lighter Triton kernel at ~1.85-1.97 GHz. Interleaved in 20 ms
batches, or call by call, both ran at the clock of their mix (1.77-1.83 GHz on an H200,
tools/ratio_probe.py), which slows the light kernel and speeds the heavy one: gqa_8/triton read
1.246x the baseline that way against 1.101x from do_bench medians of each alone; causal 1.235 vs
1.117; sliding_window_1024 1.681 vs 1.413 per useful work. So each call runs alone for a block and
the first SETTLE of it is not timed. How long is that (tools/ratio_truth.py --settle, H200, 25 ms
bins): our Triton kernel after cuDNN starts 25% slow and settles within 125 ms; cuDNN after ours
starts 2% fast, overshoots to 6% slow at 50-75 ms as the power controller catches up, and is within
1% of its settled time from ~300 ms. Blocks alternate and rotate (A B | B A | A B) so slow drift
(temperature) hits both sides alike. Within a block each call is timed alone between two events
after an L2 flush, as do_bench times it: the low-power flushes between calls are part of the power
state do_bench medians are taken in, and no call finds its inputs in L2 from the one before.
"""

import math
import statistics
import time
from dataclasses import dataclass

# asv_runner >= 0.3 times one call per sample whenever a benchmark has a setup (asv#966). One 1 ms
# kernel between two synchronisations measured 8% over do_bench on an H100 (launch and sync latency
# exposed); 45 back-to-back calls per sample, 2-5%. So the timed body runs a batch of calls and the
# timers below divide the clock by the batch size: asv records per-call time, samples and statistics.
_calls_per_sample = 1
# Per sample; launch and sync overheads (~50 us) stay under 0.3% of it. A GPU's 100 ms: asv's 10
# samples then span the ~1 s swing of a power-capped clock (suite/common.py's warm-up) instead of a
# quarter of it, whose phase a 20 ms sample's median followed.
SAMPLE_MS = {"cuda": 100.0, "cpu": 20.0}
_marks: list[float] = []  # host times the CUDA timer read; asv reads it in pairs around each sample


class HostMarks:
    """Time marks from the host clock (the CPU: its work is synchronous)."""

    def flush(self):
        return None

    def mark(self):
        return time.perf_counter()

    def wait(self):
        return None

    def ms(self, start, end) -> float:
        return (end - start) * 1e3


class CudaMarks:
    """Time marks as CUDA events on the current stream; `wait` before reading them. `flush` evicts the
    L2 (50 MB on an H100, 60 on an H200) by writing 256 MiB, as triton.testing.do_bench does."""

    _flush_buffer = None

    def flush(self):
        import torch

        if CudaMarks._flush_buffer is None:
            CudaMarks._flush_buffer = torch.empty(2**26, dtype=torch.int32, device="cuda")
        CudaMarks._flush_buffer.zero_()

    def mark(self):
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def wait(self):
        import torch

        torch.cuda.synchronize()

    def ms(self, start, end) -> float:
        return start.elapsed_time(end)


def marks_for(device):
    return CudaMarks() if device.type == "cuda" else HostMarks()


def repeats_of(call) -> int:
    """Operations per call: a collective repeats itself `call.repeats` times to amortise dispatching
    it to the other ranks; every figure is per operation."""
    return getattr(call, "repeats", 1)


def per_call_ms(call, device, calls: int = 5, marks=None) -> float:
    """A quick estimate of one call (per operation), after one untimed call."""
    marks = marks or marks_for(device)
    call()
    start = marks.mark()
    for _ in range(calls):
        call()
    end = marks.mark()
    marks.wait()
    return marks.ms(start, end) / (calls * repeats_of(call))


def batched(call, device, marks=None):
    """A body running `call` enough times back to back to fill SAMPLE_MS, and set the timers' divisor.
    One benchmark runs per asv process, so one divisor per process; it counts operations (see
    `repeats_of`), so the timers report per operation."""
    global _calls_per_sample
    repeats = repeats_of(call)
    calls_needed = max(1, math.ceil(SAMPLE_MS[device.type] / (median_ms(call, device, rounds=5, marks=marks) * repeats)))
    _calls_per_sample = calls_needed * repeats
    calls = range(calls_needed)

    def body():
        for _ in calls:
            call()

    return body


def cuda_sync_timer():
    """asv `timer` for CUDA benchmarks: synchronises, so a sample covers the GPU work of its calls;
    scaled to one operation of the batch (see `batched`)."""
    import torch

    torch.cuda.synchronize()
    now = time.perf_counter()
    _marks.append(now)
    return now / _calls_per_sample


def sample_spans() -> list[tuple[float, float]]:
    """(start, end) host times of every sample timed so far: asv's runner reads its timer once before
    and once after each sample, so the marks pair up (the power readings of those spans are the
    state the samples ran in)."""
    return list(zip(_marks[0::2], _marks[1::2]))


def cpu_timer():
    return time.perf_counter() / _calls_per_sample


def interleaved_ms(calls: dict, device, rounds: int = 25, warmup: int = 3, marks=None, batch: int = 1) -> dict:
    """{name: [ms per operation, one value per round]}: each round runs every call `batch` times back
    to back, in an order rotated per round. For calls far longer than the clock's lag (the eager
    reference, ~50 ms), or one call alone (`median_ms`); ratios of fused calls come from
    `alternating_blocks`."""
    marks = marks or marks_for(device)
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = marks.mark()
            for _ in range(batch):
                calls[name]()
            end = marks.mark()
            marks.wait()
            samples[name].append(marks.ms(start, end) / (batch * repeats_of(calls[name])))
    return samples


def median_ms(call, device, rounds: int = 25, marks=None) -> float:
    return statistics.median(interleaved_ms({"call": call}, device, rounds=rounds, marks=marks)["call"])


@dataclass(frozen=True)
class BlockPlan:
    """How `alternating_blocks` measures: `rounds` blocks per call, each `block_ms` long, of which the
    first `settle_ms` are run but not timed."""

    rounds: int
    block_ms: float
    settle_ms: float


# CUDA: see the module's docstring for the 300 ms; 3 rounds of 500 ms per side cost 3 s per ratio.
# CPU: no power state to settle; short blocks keep the tests and a CPU run quick.
BLOCK_PLANS = {
    "cuda": BlockPlan(rounds=3, block_ms=500.0, settle_ms=300.0),
    "cpu": BlockPlan(rounds=4, block_ms=4.0, settle_ms=0.0),
}


@dataclass(frozen=True)
class Blocks:
    """Per-operation ms samples of each call (one per timed call), and the host-time windows (t0, t1)
    its timed parts ran in (for the power readings of `variantbench.power`)."""

    samples: dict
    windows: dict


def alternating_blocks(calls: dict, device, plan: BlockPlan | None = None, marks=None) -> Blocks:
    """Each call runs alone for a block, then the next, in an order rotated per round (see the module's
    docstring for why). In a block every call follows an L2 flush; after `settle_ms` each call is
    timed between two marks."""
    plan = plan or BLOCK_PLANS[device.type]
    marks = marks or marks_for(device)
    names = list(calls)
    estimate = {name: max(per_call_ms(calls[name], device, marks=marks) * repeats_of(calls[name]), 1e-6)
                for name in names}
    samples = {name: [] for name in names}
    windows = {name: [] for name in names}
    for r in range(plan.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            call = calls[name]
            for _ in range(math.ceil(plan.settle_ms / estimate[name])):
                marks.flush()
                call()
            bounds = []
            for _ in range(max(1, math.ceil((plan.block_ms - plan.settle_ms) / estimate[name]))):
                marks.flush()
                start = marks.mark()
                call()
                bounds.append((start, marks.mark()))
            marks.wait()
            t1 = time.perf_counter()
            timed = [marks.ms(a, b) for a, b in bounds]
            samples[name] += [ms / repeats_of(call) for ms in timed]
            windows[name].append((t1 - sum(timed) / 1e3, t1))
    return Blocks(samples, windows)


def spread(samples) -> float:
    """Relative noise of a sample list: interquartile range over median."""
    q = statistics.quantiles(samples, n=4)
    return (q[2] - q[0]) / statistics.median(samples)


def log_ratio_standard_error(case_samples, base_samples) -> float:
    """Standard error of ln(median case / median base), as `variantbench.decide` estimates it: one
    robust sigma (1.4826 x MAD of the log samples about each side's median) pooled over both sides;
    the median of n samples has variance about (pi/2) sigma^2 / n."""
    deviations = []
    for samples in (case_samples, base_samples):
        logs = [math.log(s) for s in samples]
        centre = statistics.median(logs)
        deviations += [abs(x - centre) for x in logs]
    sigma = 1.4826 * statistics.median(deviations)
    return math.sqrt(math.pi / 2) * sigma * math.sqrt(1 / len(case_samples) + 1 / len(base_samples))


# What `batched` times (DESIGN.md timing rules); variantbench.replay builds it.
#
# From Python every launch costs the host ~5-20 us, and more on the lent machines: there mqa decode at
# llama-3-8b-decode-kv8k took the host 58-91 us a call through SDPA and 200 us through FlexAttention,
# against 27-36 us on the device (H200, tools/replay_probe.py). A call shorter than GRAPH_BELOW_MS, or
# one the host issues no faster than the device runs it, would time as the host's launches, not the
# GPU's work: such a call is timed as replays of a CUDA graph of back-to-back calls (SDPA's: 80 us a
# call eagerly, 29 us replayed).
GRAPH_BELOW_MS = 0.05
# Over ESTIMATE_CALLS calls started after a wait, the device of a host-bound call finishes at most one
# call after the host issued the last, so the host's share of the span is at least 10/11 = 0.91; a
# device-bound call's share is its host time over its device time. Calls within 20% of host-bound
# count as host-bound: graphed or not, their figure moves little.
HOST_BOUND = 0.8
ESTIMATE_CALLS = 10
# One replay lasts at least GRAPH_MS, so the replay's own launch (a few us of host) hides behind the
# one before it; at most MAX_GRAPH_CALLS calls per graph: a 2 us call still replays for 1 ms.
GRAPH_MS = 1.0
MAX_GRAPH_CALLS = 500
# A decode step (one new token a sequence) is replayed as a CUDA graph at any length: serving engines
# (vLLM, SGLang) run decode that way, and eagerly the gaps between its launches count. Paged decode at
# b1 x kv128k read 0.1527 ms eagerly and 0.1409 as a graph loop (+8.3%, H200, session 13): a figure
# of neither the kernel nor the served step.
# A call moving at most L2_MARGIN x the L2 (50 MiB on an H100, 60 on an H200) would find its inputs
# in the L2 from the call before: the body cycles through input sets until they exceed that, at most
# MAX_INPUT_SETS (variantbench.replay says why rotation and not an L2 flush).
L2_MARGIN = 2
MAX_INPUT_SETS = 16


def issue_and_call_ms(call, device, calls: int = ESTIMATE_CALLS, marks=None, host=None):
    """(ms a call takes, ms the host takes to issue one): `calls` calls back to back after an untimed
    call and a wait, between two marks and on the host clock (seconds)."""
    marks = marks or marks_for(device)
    host = host or time.perf_counter
    call()
    marks.wait()
    t0, start = host(), marks.mark()
    for _ in range(calls):
        call()
    end, t1 = marks.mark(), host()
    marks.wait()
    return marks.ms(start, end) / calls, (t1 - t0) * 1e3 / calls


@dataclass(frozen=True)
class TimingPlan:
    """How the timed body runs a call: `graph`, as CUDA-graph replays if the call captures; over
    `input_sets` copies of its inputs (1: its own only); `why`, in words with the numbers."""

    graph: bool
    input_sets: int
    why: str


def input_sets(working_set_bytes: int, l2_bytes: int) -> int:
    """Copies of the inputs to cycle through: the fewest whose bytes exceed L2_MARGIN x the L2, at most
    MAX_INPUT_SETS; 1 where one set already does."""
    if working_set_bytes > L2_MARGIN * l2_bytes:
        return 1
    return min(MAX_INPUT_SETS, L2_MARGIN * l2_bytes // max(working_set_bytes, 1) + 1)


def graph_calls(call_ms: float, sets: int) -> int:
    """Calls per captured graph: enough for a replay of GRAPH_MS, at most MAX_GRAPH_CALLS, in whole
    passes over the input sets (so consecutive calls never share a set, across replays too)."""
    wanted = math.ceil(min(GRAPH_MS / max(call_ms, 1e-6), MAX_GRAPH_CALLS) / sets) * sets
    return max(sets, min(wanted, MAX_GRAPH_CALLS // sets * sets))


def decode_step(shape) -> bool:
    """Whether a shape is one decode step: its phase is decode and each sequence brings one new query
    (a chunked prefill's 512 new tokens are not one; a MoE shape's decode is its few tokens)."""
    return getattr(shape, "phase", None) == "decode" and getattr(shape, "q_len", 1) == 1


def plan_timing(call_ms: float, issue_ms: float, repeats: int | None, working_set_bytes: int,
                l2_bytes: int, decode: bool = False, ranks: int | None = None) -> TimingPlan:
    """The plan for a CUDA call from its eager time, the host's time to issue it (per call, from
    `issue_and_call_ms`), its repeats (a collective's `call.repeats`; None for any other call), the
    bytes of its work model, the L2's size, whether it is a decode step (`decode_step`) and the ranks
    it spans (a split block's `call.ranks`; None for a call on one device).

    A call over ranks is never captured around, even at one repeat or as a decode step: it messages
    the other ranks, which run their part whether or not rank 0's capture then fails, and a failed
    capture left them one collective ahead (64 MiB all-reduce over two torchrun "nodes" on an H200
    host, 20 ms a collective, hung the run until its time limit); a replayed graph's collectives
    would wait for ranks that run nothing."""
    if repeats is not None:
        return TimingPlan(False, 1, f"a call of {repeats} collectives replays its own CUDA graphs of them "
                                    "(kernels/comms/nccl.py): none captured around it; they reuse one buffer, "
                                    "so rotating inputs between calls would not make them cold")
    if ranks is not None:
        return TimingPlan(False, 1, f"a call over {ranks} ranks starts theirs by a message "
                                    "(kernels/block/parallel.py): none captured around it, inputs not rotated")
    sets = input_sets(working_set_bytes, l2_bytes)
    moved, margin = f"{working_set_bytes / 1e6:.1f} MB moved", f"{L2_MARGIN} x {l2_bytes / 2**20:.0f} MiB of L2"
    if sets == 1:
        l2 = f"{moved} > {margin}: inputs not rotated"
    else:
        cold = "" if sets * working_set_bytes > L2_MARGIN * l2_bytes else " (capped: still partly in the L2)"
        l2 = f"{moved} <= {margin}: {sets} input sets rotated{cold}"
    share = issue_ms / max(call_ms, 1e-9)
    if call_ms < GRAPH_BELOW_MS:
        return TimingPlan(True, sets, f"{l2}; {call_ms * 1e3:.1f} us a call, under {GRAPH_BELOW_MS * 1e3:.0f} us: "
                                      "CUDA-graph replays")
    if decode:
        return TimingPlan(True, sets, f"{l2}; a decode step, {call_ms * 1e3:.1f} us a call: CUDA-graph replays, "
                                      "as serving engines run decode")
    if share >= HOST_BOUND:
        return TimingPlan(True, sets, f"{l2}; the host took {share:.0%} of a call's {call_ms * 1e3:.1f} us to issue "
                                      "it: CUDA-graph replays")
    return TimingPlan(False, sets, f"{l2}; {eager_share(call_ms, issue_ms)}")


def eager_share(call_ms: float, issue_ms: float) -> str:
    """In words, how much of an eager call the host spends issuing it (`issue_and_call_ms`). From HOST_BOUND
    up the host sets the figure as much as the GPU does (its issue, or a wait on the GPU inside the call,
    which reads near 100% too): a forward is then replayed as a CUDA graph (`plan_timing`); a
    forward+backward is not captured (suite/common.py), so its line says so (session 29's documents'
    forward+backward moved 15% between leases, its forward not, and no log said why)."""
    share = issue_ms / max(call_ms, 1e-9)
    words = f"{call_ms * 1e3:.1f} us a call, {share:.0%} of it to issue: eager calls"
    return words + ("; the host's issue sets this figure as much as the GPU" if share >= HOST_BOUND else "")
