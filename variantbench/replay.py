"""The call a forward's timed body runs on CUDA, as `variantbench.timing.plan_timing` decides: replays
of a checked CUDA graph of back-to-back calls, a cycle over rotated copies of the inputs, or both.

Why rotation, and not an L2 flush, keeps a small working set out of the L2. Only calls that move at
most 2 x the L2 are concerned (120 MiB on an H200, 100 on an H100): mqa decode at
llama-3-8b-decode-kv8k moves 67 MB, 26-29 us a call through SDPA replayed on an H200
(tools/replay_probe.py). The flush do_bench and our ratio blocks use (CudaMarks.flush) writes 256 MiB:
about 60-70 us at an H200's 4.8 TB/s, 80-100 us at an H100's 3.35. So the flush would take 2-4x the
call it brackets, and each 1% of jitter in it, left over after subtracting its separately measured
time, is 2-4% of the call's figure, against the 5% by which every figure must agree with an
independent measurement (DESIGN.md). A flush also cannot sit between the calls of a replayed graph
without being replayed and timed with them, and it leaves the L2 full of dirty lines that the next
call writes back. Rotation adds nothing to the timed body. Its price is memory, R sets of at most
2 x L2 + one working set of work-model bytes (240 MiB on an H200; a MoE problem also holds the
experts no token reaches), and one prepare per extra set (where FlexAttention's guards refuse the new
inputs that is another compile, 7-10 s on an H100 host).

Every captured graph is checked before it is timed: its outputs are poisoned (NaN), it is replayed
once, and every input set's output must equal an eager call's on that set. A capture that dropped
work (the poison stays) or read another set's inputs would otherwise time as a fast call. A call that
synchronises with the host (.item(), .tolist(), nonzero, torch.bincount's bounds check) cannot be
captured: one call under CUDA's sync debug mode finds it before any capture is tried. Such a call, and
one whose capture fails or whose replay differs, is timed eagerly, and its Mode says why.
"""

import time
import warnings
from dataclasses import dataclass

from variantbench import cases, timing
from variantbench.catalog import family

# A replayed output against an eager one: a reduction in another order moves an element by an ulp or
# two of its dtype (bf16: 2^-7 relative); a dropped write leaves NaN, and another input set's output
# differs by the outputs' own size. So 4 ulps, relative and of the largest element.
REPLAY_ULPS = 4
# Seeds tried per input set wanted before giving up on copies that run the case's backend.
SEEDS_PER_SET = 3


@dataclass(frozen=True)
class Mode:
    """What a forward's timed figure is of; the memo of the `TimingMode` tracks (suite/common.py)."""

    cuda_graph: int  # 1: CUDA-graph replays (captured here, or by the call itself); 0: eager calls
    graph_calls: int  # calls per graph captured here; 0: none
    input_sets: int  # input sets the body cycles through; 1: not rotated
    why: str


class Rotating:
    """A call that runs the next input set's call each time, cycling through them."""

    def __init__(self, calls):
        self.calls, self.next = calls, 0

    def __call__(self):
        call = self.calls[self.next]
        self.next = (self.next + 1) % len(self.calls)
        return call()


class Replay:
    """One replay of a graph of `repeats` calls; the timers divide by them (timing.repeats_of)."""

    def __init__(self, graph, repeats):
        self.graph, self.repeats = graph, repeats

    def __call__(self):
        self.graph.replay()


class CudaDevice:
    """The device side of this module: torch.cuda's graphs, its sync check, the L2's size, and the
    clocks (CUDA events, the host's) timing reads. Tests stand in a fake."""

    def __init__(self, device):
        self.device = device
        self.marks = timing.CudaMarks()
        self.host = time.perf_counter

    def l2_bytes(self) -> int:
        import torch

        return torch.cuda.get_device_properties(self.device).L2_cache_size

    def host_sync(self, call) -> str | None:
        """Why `call` cannot be captured, or None: one call with CUDA's sync debug mode at "error"
        raises at the first host synchronisation, before a capture would fail on it."""
        import torch

        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings():
            # "...does not yet detect all synchronizing operations": one it misses fails the capture,
            # which is refused there (torch 2.11 on an H200: our MoE kernels' routing was found here).
            warnings.filterwarnings("ignore", "Synchronization debug mode is a prototype", UserWarning)
            torch.cuda.set_sync_debug_mode("error")
        try:
            call()
        except RuntimeError as error:
            return f"it synchronises with the host ({cases.first_line(error)})"
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        return None

    def capture(self, body):
        """(graph, what body returned while captured), after one run of body on a side stream, the
        warm-up torch.cuda.graphs asks for. torch.cuda.graph leaves its side stream current when the
        capture fails: the current stream is put back."""
        import torch

        stream = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            body()
        stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                result = body()
        finally:
            torch.cuda.set_stream(stream)
        return graph, result


def tensors(result) -> list:
    """A call's output tensors: it returns one, or a tuple or list of them."""
    return list(result) if isinstance(result, (tuple, list)) else [result]


def same_output(replayed, eager) -> bool:
    import torch

    if replayed.shape != eager.shape or replayed.dtype != eager.dtype:
        return False
    if not eager.is_floating_point():
        return torch.equal(replayed, eager)
    ulps = REPLAY_ULPS * torch.finfo(eager.dtype).eps
    scale = eager.abs().max().item() if eager.numel() else 0.0
    return torch.allclose(replayed.double(), eager.double(), rtol=ulps, atol=ulps * scale)


def _poison(out, eager):
    """Values the eager call did not give, so an output the replay leaves unwritten cannot pass."""
    if out.is_floating_point():
        out.fill_(float("nan"))
    else:
        out.copy_(eager.bitwise_not())


def checked_graph(cuda, calls, count):
    """(graph, None), a captured graph of `count` calls cycling through `calls` (one per input set;
    `count` a multiple of them) whose replay gives each set's eager output; or (None, why not)."""
    expected = [[t.detach().clone() for t in tensors(call())] for call in calls]

    def body():
        last = []  # the outputs of the last pass, one per set; earlier ones go back to the pool
        for i in range(count):
            result = calls[i % len(calls)]()
            if i >= count - len(calls):
                last.append(tensors(result))
        return last

    try:
        graph, captured = cuda.capture(body)
    except RuntimeError as error:
        return None, f"its capture failed ({cases.first_line(error)})"
    for outs, wanted in zip(captured, expected):
        for out, eager in zip(outs, wanted):
            _poison(out, eager)
    graph.replay()  # on the current stream, as the poison before it and the comparisons after it
    for i, (outs, wanted) in enumerate(zip(captured, expected)):
        if len(outs) != len(wanted) or not all(same_output(o, e) for o, e in zip(outs, wanted)):
            return None, f"a replay of its graph does not give an eager call's output on input set {i}"
    return graph, None


def graphed(cuda, calls, call_ms, decode=False):
    """(Replay, None) or (None, why not). The graph is sized from the eager time; a call bound by its
    launches ran shorter on the device than that, so where a replay lasts under half of
    timing.GRAPH_MS it is captured again, longer. A call that replayed takes timing.GRAPH_BELOW_MS or
    more on the device is no short call (its host was slow): it is timed as a model runs it, eagerly,
    unless it is a decode step, which a model serves as a graph at any length."""
    count = timing.graph_calls(call_ms, len(calls))
    graph, why = checked_graph(cuda, calls, count)
    if graph is None:
        return None, why
    device_ms = timing.median_ms(Replay(graph, count), cuda.device, rounds=5, marks=cuda.marks)  # per call
    if device_ms >= timing.GRAPH_BELOW_MS and not decode:
        return None, f"replayed, a call takes {device_ms * 1e3:.1f} us on the device: not a short call"
    if device_ms * count < timing.GRAPH_MS / 2:
        count = timing.graph_calls(device_ms, len(calls))
        graph, why = checked_graph(cuda, calls, count)
        if graph is None:
            return None, why
    return Replay(graph, count), None


def with_copies(call, copy, sets):
    """The call and sets - 1 copies of it, `copy(seed)` preparing it on inputs of another seed. Every
    copy runs the backend the call runs: SDPA picks its fastest per prepare, and sets timed through two
    backends would be a figure of neither; a copy that picked another gives way to the next seed."""
    backend = getattr(call, "backend", None)
    calls, seed = [call], 1
    while len(calls) < sets:
        if seed > SEEDS_PER_SET * sets:
            raise RuntimeError(f"{seed - 1} copies of the inputs gave {len(calls) - 1} that run backend {backend}: "
                               f"cannot rotate {sets} input sets through one backend")
        other = copy(seed)
        seed += 1
        if getattr(other, "backend", None) == backend:
            calls.append(other)
    return calls


def timed_call(call, device, copy, working_set, cuda=None, decode=False):
    """(the call the timed body runs, its Mode). `copy(seed)`: the same call prepared on inputs of
    another seed; `working_set()`: the bytes its work model moves; `decode`: whether the call is a
    decode step (timing.decode_step). On the CPU, the call itself."""
    if device.type != "cuda":
        return call, Mode(0, 0, 1, "on the CPU: eager calls on one input set")
    cuda = cuda or CudaDevice(device)
    call_ms, issue_ms = timing.issue_and_call_ms(call, device, marks=cuda.marks, host=cuda.host)
    repeats = getattr(call, "repeats", None)  # a collective's (timing.repeats_of)
    plan = timing.plan_timing(call_ms, issue_ms, repeats, working_set(), cuda.l2_bytes(), decode,
                              getattr(call, "ranks", None))  # a split block's
    calls = with_copies(call, copy, plan.input_sets)
    why = plan.why
    if plan.graph:
        replay, refused = None, cuda.host_sync(call)
        if refused is None:
            replay, refused = graphed(cuda, calls, call_ms, decode)
        if replay is not None:
            return replay, Mode(1, replay.repeats, len(calls), why)
        why = f"{why}; eager calls instead: {refused}"
    # A collective's call replays its own graphs (see plan_timing): its figure is of replays too.
    return (calls[0] if len(calls) == 1 else Rotating(calls)), Mode(int(repeats is not None), 0, len(calls), why)


def copier(case, problem):
    """copy(seed): the case's call prepared by its implementation on the family's problem drawn at
    seed `seed` after the timed one (the check's seed is far off: cases.CHECK_SEED_OFFSET)."""
    fam = family(case.family)

    def copy(seed):
        other = fam.make_problem(case.variant, case.shape, device=problem.device, dtype=case.dtype,
                                 seed=cases.SEED + seed)
        return case.implementation.load().prepare(case.variant, other)

    return copy


# What each prepared call is timed as, once a process, keyed by the call (held, so its id is never
# reused): a decode step's ratio (metrics.timed_as_served) and then asv's body time the same call,
# which would otherwise capture its graph and prepare its input copies twice.
_TIMED = {}


def for_case(case, problem, call, cuda=None):
    """`timed_call` for a prepared case: copies from `copier`, the working set from the bytes of the
    family's work model. Built once a call (`_TIMED`)."""
    kept = _TIMED.get(id(call))
    if kept is None or kept[0] is not call:
        fam = family(case.family)
        kept = _TIMED[id(call)] = (call, timed_call(call, problem.device, copier(case, problem),
                                                    lambda: fam.work(case.variant, problem)[1], cuda,
                                                    timing.decode_step(case.shape)))
    return kept[1]
