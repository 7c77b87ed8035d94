"""Collectives through torch.distributed: NCCL on CUDA, one process per GPU; gloo on the CPU.

The process that prepares a case is rank 0. Its first case gets it the other ranks (kernels/comms/
ranks.py: started on this machine, or torchrun workers on several nodes), kept for every case it
prepares; each rank builds the case's buffers from the same seed and runs the same collective, told
what to run by a message (`serve`). A call runs `repeats` collectives back to back on every
rank, calibrated to last CALL_MS so that message (tens of microseconds) costs a few percent at most,
and the timers divide by it. On CUDA those collectives are one CUDA graph, captured on every rank and
checked against an eager call, as nccl-tests' `-G` and as inference engines run their decode steps:
launched one by one from Python, an 8 KiB collective cost 24-140 us, Python's dispatch rather than the
device's (DESIGN.md: work under ~10 us is timed as graph replays). Rank 0's
time covers collectives none of which can finish before the slowest rank joins: the slowest rank's
time, as nccl-tests reports. NVLink multicast stays off in every rank (../shared/GPU.md).
"""

import atexit
import importlib
import math
import os
import pickle
import sys  # noqa: F401 - tests set the ranks' interpreter through nccl.sys.executable
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kernels.comms.ranks import RankGone, local_device, start
from variantbench.catalog import lookup
from variantbench.catalog.comms import rank_input
from variantbench.progress import stall_dumps

CALL_MS = 5.0  # a call's length, whatever one collective takes (8 KiB over NVLink: ~20 us)
MAX_REPEATS = 10_000
# Collectives per captured graph; a call replays the graph repeats / GRAPH_OPS times. Longer graphs
# time slower per collective: on two H200s (tools/comms_truth.py, 8 KiB all-reduce per collective)
# graphs of 10, 25, 50, 100 and 400 calls gave 10.1, 13.3, 18.4-18.8, 14.9-17.9 and 27.8-31.4 us; at
# 1 GiB the length changes nothing (3252-3268 us). Ten is what nccl-tests' -G latency looks like.
GRAPH_OPS = 10
CAPTURE_CHECK_CHUNK = 2**26  # elements compared at once by the capture check: 256 MiB in float32

_workers = []  # [this process's ranks.Peers], got by its first case (a list: a test swaps in a fresh one)
_graphs = []  # every CUDA graph this process captured, freed before its process group


def split_sizes(splits, rank):
    """(arrived, sent) element counts of `rank` for torch's all_to_all_single; (None, None) where
    every count is equal, so torch takes its equal-split path, the one nccl-tests' alltoall times."""
    sent = splits[rank]
    arrived = [row[rank] for row in splits]
    if len(set(sent + arrived)) == 1:
        return None, None
    return arrived, sent


def _in_place(x, ranks, rank, splits):
    return x


def _gathered(x, ranks, rank, splits):
    return x.new_empty(x.numel() * ranks)


def _scattered(x, ranks, rank, splits):
    return x.new_empty(x.numel() // ranks)


def _received(x, ranks, rank, splits):
    return x.new_empty(sum(row[rank] for row in splits))


def _all_reduce(x, out, splits, rank):
    dist.all_reduce(x)
    return x


def _all_gather(x, out, splits, rank):
    dist.all_gather_into_tensor(out, x)
    return out


def _reduce_scatter(x, out, splits, rank):
    dist.reduce_scatter_tensor(out, x)
    return out


def _all_to_all(x, out, splits, rank):
    arrived, sent = split_sizes(splits, rank)
    dist.all_to_all_single(out, x, arrived, sent)
    return out


def _ep_dispatch_combine(x, out, splits, rank):
    arrived, sent = split_sizes(splits, rank)
    dist.all_to_all_single(out, x, arrived, sent)
    # the expert: rows that reached rank r are multiplied by r + 1; then back to their sources
    dist.all_to_all_single(x, out * (rank + 1), sent, arrived)
    return x


@dataclass(frozen=True)
class _Op:
    """A collective as each rank runs it. `output(x, ranks, rank, splits)`: the buffer its result lands
    in (x itself where it works in place: the capture check tells the two apart by identity);
    `once(x, out, splits, rank)`: one collective, returning the buffer that holds its result."""

    output: Callable
    once: Callable


# reference/comms.py's collectives by the same names (a catalog entry's `op`, sent to every rank by
# name). tests/test_comms.py checks that every catalog op has an entry here.
OPS = {
    "all_reduce": _Op(_in_place, _all_reduce),  # torch.distributed's all-reduce is in place
    "all_gather": _Op(_gathered, _all_gather),
    "reduce_scatter": _Op(_scattered, _reduce_scatter),
    "all_to_all": _Op(_received, _all_to_all),
    "ep_dispatch_combine": _Op(_received, _ep_dispatch_combine),
}


class _Collective:
    """One rank's buffers and collective for a case: `check()` runs it on the check-sized inputs and
    returns the output; `run(n)` runs it n times on the full-sized ones: on CUDA as one CUDA graph of
    n collectives (captured once per n), on the CPU as a loop."""

    def __init__(self, op, rank, ranks, device, dtype, seed, numel, check_numel, splits, check_splits):
        self.op, self.rank, self.ranks = op, rank, ranks
        self.device = local_device(device)
        self.dtype, self.seed = dtype, seed
        self.check_numel, self.check_splits = check_numel, check_splits
        self.buffers = self._buffers(numel, splits)
        self.graphs = {}  # collectives per replay -> torch.cuda.CUDAGraph

    def _buffers(self, numel, splits):
        x = rank_input(self.seed, self.rank, numel, self.dtype, self.device)
        return x, lookup(OPS, self.op, "collective").output(x, self.ranks, self.rank, splits), splits

    def _once(self, x, out, splits):
        return OPS[self.op].once(x, out, splits, self.rank)  # a known name: _buffers looked it up first

    def check(self):
        x, out, splits = self._buffers(self.check_numel, self.check_splits)
        result = self._once(x, out, splits)
        # In the working dtype: the check's tolerance comes from the reference rounded to it (a bf16
        # sum is off the exact one by up to half an ulp, NCCL's as much as the reference's).
        return result.detach().to("cpu")

    def run(self, count):
        if self.device.type == "cpu":
            for _ in range(count):
                self._once(*self.buffers)
            return
        ops = min(count, GRAPH_OPS)
        if ops not in self.graphs:
            if not self.graphs:
                self._check_capture()
            self.graphs[ops] = self._capture(ops)
        for _ in range(count // ops):
            self.graphs[ops].replay()
        torch.cuda.synchronize(self.device)

    def _capture(self, count):
        graph = torch.cuda.CUDAGraph()
        # thread_local: ProcessGroupNCCL's watchdog thread queries its events while this one captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            for _ in range(count):
                self._once(*self.buffers)
        _graphs.append(graph)
        return graph

    def _check_capture(self):
        """One captured collective on the seeded inputs must give what one eager call gives. A capture
        that misses the collective leaves its output untouched (NaN here, or the input for the in-place
        all-reduce) and would time as a very fast collective: this fails the case instead. The eager
        call also connects every peer before any capture."""
        x, out, splits = self.buffers
        seeded = x.clone()
        result = self._once(x, out, splits)  # the buffer the collective leaves its result in
        expected = result.clone()
        x.copy_(seeded)
        graph = self._capture(1)
        if out is not x:
            out.fill_(float("nan"))
        graph.replay()
        if not replay_matches_eager(result, expected):
            raise RuntimeError(f"rank {self.rank}: a CUDA graph replay of {self.op} does not give what an "
                               "eager call gives: the capture missed the collective; not timed")
        x.copy_(seeded)
        self.graphs[1] = graph


def whole_graphs(repeats):
    """Repeats as whole replays of a GRAPH_OPS-collective graph (fewer repeats: one graph of them)."""
    return repeats if repeats <= GRAPH_OPS else math.ceil(repeats / GRAPH_OPS) * GRAPH_OPS


def replay_matches_eager(replayed, eager):
    """Whether a graph replay's output agrees with an eager call's. bf16 sums in another order differ
    by an ulp or two (2^-7 relative), near zero by the ulp of the partial sums (about 0.03 for 4 ranks
    of unit normals); a missed collective by O(1). Compared in float32 a chunk at a time: whole, an
    8-rank all-gather of 1 GiB would take two 16 GiB copies."""
    return all(torch.allclose(r.float(), e.float(), rtol=2e-2, atol=5e-2)
               for r, e in zip(replayed.split(CAPTURE_CHECK_CHUNK), eager.split(CAPTURE_CHECK_CHUNK)))


def _release_graphs():
    """CUDA graphs that hold NCCL kernels keep the communicator busy: destroying the process group
    with one alive can hang (pytorch#115388). Free them first."""
    for graph in _graphs:
        graph.reset()
    _graphs.clear()


def _made(spec, rank, ranks, device):
    """What a rank prepares: a collective, or what `spec["maker"]` names ("module:Class", such as a
    block split over the ranks, kernels/block/parallel.py); either has `check()` and `run(n)`."""
    spec = dict(spec)
    maker = spec.pop("maker", None)
    if maker is None:
        return _Collective(rank=rank, ranks=ranks, device=device, **spec)
    module, _, name = maker.partition(":")
    return getattr(importlib.import_module(module), name)(rank=rank, ranks=ranks, device=device, **spec)


def _prepare_here(link, made, message, rank, ranks, device):
    key, spec = message[1], message[2]
    with stall_dumps():  # a rank that stalls writes its stack to the run's progress log too
        try:
            made[key] = _made(spec, rank, ranks, device)
            reply = made[key].check()
        except Exception as error:  # noqa: BLE001 - rank 0 reports it; this rank serves the next case
            traceback.print_exc()  # the whole story on the benchmark's stderr (or its torchrun node's output)
            reply = ("error", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    link.send_bytes(pickle.dumps(reply))


def _run_here(link, made, message, rank, ranks, device):
    made[message[1]].run(message[2])  # timed on rank 0, so nothing more here; TIMEOUT bounds a stall


# What rank 0 asks of a rank, by a message's first word (besides "stop"): ("prepare", key, spec) makes
# and checks a case, replying its check output or ("error", line); ("run", key, count) runs it.
HANDLERS = {"prepare": _prepare_here, "run": _run_here}


def serve(link, rank, ranks, device):
    """Rank `rank`'s side, on its end `link` of rank 0's Connection, until rank 0 says stop."""
    made = {}
    while True:
        try:
            message = pickle.loads(link.recv_bytes())
        except (EOFError, OSError):
            # Rank 0 exited without saying stop (asv ends its processes with os._exit; a failed setup
            # raises). Leave at once: destroying an NCCL group whose peer is gone can block, and this
            # process may hold the output pipe asv waits on (an H200 pair sat 420 s in one such run).
            os._exit(0)
        if message[0] == "stop":
            return
        lookup(HANDLERS, message[0], "message")(link, made, message, rank, ranks, device)


def leave():
    """Graphs first, then the group (see _release_graphs)."""
    _release_graphs()
    dist.destroy_process_group()


def _stop():
    for peers in _workers:
        peers.stop()
    _workers.clear()
    _release_graphs()
    if dist.is_initialized():
        dist.destroy_process_group()


def peers(ranks, device):
    """This process's other ranks, got by its first case and kept for the next ones."""
    if not _workers:
        _workers.append(start(ranks, device))
        atexit.register(_stop)
    if _workers[0].ranks != ranks:
        raise RuntimeError(f"this process's ranks are {_workers[0].ranks}, the case's {ranks}")
    return _workers[0]


def send(message):
    """`message` to every rank but this one (a "run" on every rank calls this, then runs its own)."""
    _workers[0].send(message)


def replies(what):
    """Every other rank's next reply, in rank order; the first error raises after all are read, so
    none is left for the next case. A rank that is gone is the error raised: it explains the rest."""
    got, failed = [], None
    others = _workers[0]
    for rank in range(1, others.ranks):
        try:
            reply = others.reply(rank, what)
            if isinstance(reply, tuple) and reply[:1] == ("error",):
                raise RuntimeError(f"rank {rank} could not prepare: {reply[1]}")
            got.append(reply)
        except (RuntimeError, TimeoutError) as error:  # a silent rank too: the later ones are still read
            if failed is None or (isinstance(error, RankGone) and not isinstance(failed, RankGone)):
                failed = error
    if failed:
        raise failed
    return got


def prepared_everywhere(key, spec, make_mine):
    """(rank 0's prepared case, every rank's check output): `spec` is prepared on every other rank
    (what `_made` makes of it) and `make_mine()` here. Where this rank fails, the others' replies to
    the case are still read, so none is left for the next case, and this rank's error stands, unless
    a rank is gone: that explains this rank's failure."""
    _workers[0].check_alive()
    send(("prepare", key, spec))
    try:
        mine = make_mine()
        first = mine.check()
    except Exception as error:
        try:
            replies("check")
        except RankGone as gone:
            raise gone from error
        except Exception:  # noqa: BLE001 - theirs are usually this one again
            pass
        raise
    return mine, [first] + replies("check")


def prepare(variant, problem):
    device = problem.device.type
    peers(problem.ranks, device)
    numel = problem.numel
    spec = {"op": variant.op, "dtype": problem.dtype, "seed": problem.seed, "numel": numel,
            "check_numel": problem.check_numel(), "splits": problem.splits(numel),
            "check_splits": problem.splits(problem.check_numel())}
    key = f"{variant.name}/{problem.shape.name}/{problem.seed}"
    mine, problem.check_outputs = prepared_everywhere(
        key, spec, lambda: _Collective(rank=0, ranks=problem.ranks, device=device, **spec))

    def run(repeats):
        send(("run", key, repeats))
        mine.run(repeats)
        return mine.buffers[1] if mine.buffers[1] is not None else mine.buffers[0]

    repeats = 1
    for _ in range(3):  # the first guess includes the dispatch; the next ones amortise it
        run(repeats)  # on CUDA this captures the graph of that many: outside the measurement
        t0 = time.perf_counter()
        run(repeats)
        per_collective_ms = (time.perf_counter() - t0) * 1e3 / repeats
        repeats = whole_graphs(max(1, min(MAX_REPEATS, math.ceil(CALL_MS / per_collective_ms))))
    run(repeats)  # the timed graph, captured before any timed call

    def call():
        return run(repeats)

    call.repeats = repeats
    return call
