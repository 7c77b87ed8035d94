"""The other ranks of a collective, as rank 0 (the process that prepares a case) reaches them.

VARIANTBENCH_RANKS says where they come from:

  unset            rank 0 starts ranks 1..n-1 on its own machine, one per GPU (2 gloo processes on the
                   CPU), and keeps them for every case it prepares: kernels/comms/local.py.
  torchrun://H:P   ranks 1..n-1 are torchrun workers on one or more nodes, serving one rank 0 after
                   another through the control store at H:P: kernels/comms/torchrun.py, started as
                   kernels/comms/serve_ranks.py says.

Either way rank 0 holds a `Peers`, one multiprocessing Connection to each other rank (a socket pair
locally, TCP through torchrun), and each other rank runs `nccl.serve` on its end: the same messages,
the same replies, the same errors.
"""

import datetime
import os
import pickle

import torch
import torch.distributed as dist

from variantbench.catalog import lookup

ENV = "VARIANTBENCH_RANKS"
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}
# A rank that died or never joined fails the others' collectives and the rendezvous, never hangs them.
# The largest collective of the suite (1 GiB per rank) takes milliseconds; a rank's start (process,
# torch import, CUDA and NCCL init) about 10 s: 60 s is a stall, not a slow machine.
TIMEOUT = datetime.timedelta(seconds=60)


class BadRanks(Exception):
    """VARIANTBENCH_RANKS names no world this process can use; the message is one line."""


class RankGone(RuntimeError):
    """A rank's process is gone. It explains every other failure of the same case (the survivors'
    collectives fail for want of it), so it is the error a case reports."""


def join(rank, ranks, device, gpu, **rendezvous):
    """Join the case's process group as `rank` of `ranks`, on GPU `gpu` where on CUDA; `rendezvous`
    is init_process_group's init_method or store."""
    os.environ.update(MULTICAST_OFF)
    if device == "cuda":
        torch.cuda.set_device(gpu)
    dist.init_process_group(lookup(BACKENDS, device, "device"), rank=rank, world_size=ranks, timeout=TIMEOUT,
                            **rendezvous)


def local_device(device):
    """This rank's device: the GPU `join` chose (rank r's GPU is not GPU r on a second node)."""
    return torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")


class Peers:
    """Rank 0's connections to ranks 1..n-1, `links` {rank: Connection}. Messages and replies are
    plain pickles (a rank may be its own program, without multiprocessing's key for torch's shared
    tensors). A launcher says how a rank's exit reads (`exited`) and where its error went (`errors`)."""

    errors = ""  # where a rank's error went
    stacks = "its stack is in the run's progress log"  # where a stalled rank's stack goes

    def __init__(self, links):
        self.links = links
        self.ranks = len(links) + 1

    def exited(self, rank):
        raise NotImplementedError

    def _gone(self, rank, when):
        return RankGone(f"rank {rank} {self.exited(rank)} {when} ({self.errors})")

    def send(self, message):
        """`message` to every other rank."""
        data = pickle.dumps(message)
        for rank, link in self.links.items():
            try:
                link.send_bytes(data)
            except OSError:  # BrokenPipeError, ConnectionResetError: its end is closed
                raise self._gone(rank, f"before its {message[0]} message") from None

    def reply(self, rank, what):
        """Rank `rank`'s next reply; a rank that exited or stays silent for TIMEOUT fails the case
        with one line."""
        link = self.links[rank]
        if not link.poll(TIMEOUT.total_seconds()):
            raise TimeoutError(f"rank {rank} sent no {what} reply within {TIMEOUT.total_seconds():.0f} s "
                               f"(a stalled NCCL init or collective; {self.stacks})")
        try:
            return pickle.loads(link.recv_bytes())
        except (EOFError, OSError):
            raise self._gone(rank, f"before its {what} reply") from None

    def check_alive(self):
        """RankGone naming the ranks whose end closed since their last reply (a node's agent stops all
        of its workers when one dies). No reply is due between cases: what there is to read is an end
        of file, or a reply that came after its case timed out, which is dropped."""
        gone = []
        for rank, link in self.links.items():
            try:
                while link.poll(0):
                    link.recv_bytes()
            except (EOFError, OSError):
                gone.append(rank)
        if gone:
            also = f"; so did rank(s) {', '.join(map(str, gone[1:]))}" if gone[1:] else ""
            raise self._gone(gone[0], "after its last case" + also)

    def stop(self):
        for link in self.links.values():
            try:
                link.send_bytes(pickle.dumps(("stop",)))
            except OSError:
                pass


def _torchrun(where):
    from kernels.comms.torchrun import Control

    return Control(where)


# VARIANTBENCH_RANKS' scheme -> what opens the world it names at the address after "://"
SCHEMES = {"torchrun": _torchrun}
# (VARIANTBENCH_RANKS' value, pid) -> its world, or the BadRanks it gave, once per process: asv's
# forkserver forks every benchmark, and two processes on one store connection would read each other's
# answers; and a store that did not answer in TIMEOUT is not asked again for each case `list` shows.
_served = {}


def served():
    """The world VARIANTBENCH_RANKS names (a torchrun.Control), connected once per process; None where
    it is unset (rank 0 starts the others). BadRanks where it names none."""
    value = os.environ.get(ENV, "")
    if not value:
        return None
    key = (value, os.getpid())
    if key not in _served:
        scheme, sep, where = value.partition("://")
        try:
            if not sep or scheme not in SCHEMES:
                raise BadRanks(f"{ENV}={value!r}: unknown scheme {scheme if sep else value!r}; known: "
                               f"{', '.join(f'{s}://HOST:PORT' for s in SCHEMES)} (unset: ranks started on this machine)")
            _served[key] = SCHEMES[scheme](where)
        except BadRanks as why:
            _served[key] = why
    if isinstance(_served[key], BadRanks):
        raise _served[key]
    return _served[key]


def world(device):
    """How many ranks a collective runs on: the served world, else every GPU here (2 on the CPU)."""
    ranks = served()
    if ranks is not None:
        return ranks.ranks
    return torch.cuda.device_count() if device == "cuda" else 2


def start(ranks, device):
    """This process's Peers for a world of `ranks`: a session of the served world, or ranks started here."""
    served_world = served()
    if served_world is None:
        from kernels.comms.local import LocalPeers

        return LocalPeers.start(ranks, device)
    if served_world.ranks != ranks:
        raise BadRanks(f"{ENV}: the served world has {served_world.ranks} ranks, the case {ranks}")
    return served_world.session(device)
