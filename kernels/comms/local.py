"""Ranks 1..n-1 started by rank 0 on its own machine (VARIANTBENCH_RANKS unset): one process per GPU
(2 gloo processes on the CPU), each holding one end of a socket pair, for as long as rank 0 lives.

They are plain `python -m kernels.comms.local` processes, not multiprocessing's spawn: its children
re-run the parent's main script, and under asv that is asv's runner, importable only from a
PYTHONPATH asv strips from its benchmarks' environment. On an H200 pair every rank then died before
its first line and rank 0 waited out the rendezvous, case after case.
"""

import multiprocessing
import multiprocessing.connection
import pickle
import socket
import subprocess
import sys
from pathlib import Path

from kernels.comms.ranks import Peers, join
from variantbench.progress import progress, stall_dumps


class LocalPeers(Peers):
    errors = "its error is on this benchmark's stderr"

    def __init__(self, processes, links):
        super().__init__(links)
        self.processes = processes  # rank -> subprocess.Popen

    def exited(self, rank):
        return f"exited with code {self.processes[rank].wait()}"

    @classmethod
    def start(cls, ranks, device):
        """Start ranks 1..n-1 and join them as rank 0."""
        with socket.socket() as probe:  # a free port for the rendezvous
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        root = Path(__file__).resolve().parents[2]
        processes, links = {}, {}
        for rank in range(1, ranks):
            ours, theirs = multiprocessing.Pipe()
            processes[rank] = subprocess.Popen(
                [sys.executable, "-m", "kernels.comms.local", str(rank), str(ranks), device, str(port),
                 str(theirs.fileno())],
                cwd=root, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
            theirs.close()
            links[rank] = ours
        peers = cls(processes, links)
        try:
            for rank in links:
                peers.reply(rank, "start")
        except BaseException:
            peers.kill()
            raise
        progress(f"rank 0 started ranks 1-{ranks - 1}; rendezvous on port {port}")
        join(0, ranks, device, 0, init_method=f"tcp://127.0.0.1:{port}")
        progress("rank 0 joined")
        return peers

    def kill(self):
        for process in self.processes.values():
            process.kill()
            process.wait()

    def stop(self):
        super().stop()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def main(rank, ranks, device, port, pipe):
    pipe.send_bytes(pickle.dumps(("started",)))
    progress(f"rank {rank} of {ranks} started")
    with stall_dumps():
        join(rank, ranks, device, rank, init_method=f"tcp://127.0.0.1:{port}")
    progress(f"rank {rank} joined the {'NCCL' if device == 'cuda' else 'gloo'} group")
    from kernels.comms import nccl

    nccl.serve(pipe, rank, ranks, device)
    nccl.leave()


if __name__ == "__main__":
    # A rank started by LocalPeers.start: rank, ranks, device, rendezvous port, its end of the socket pair.
    rank_arg, ranks_arg, device_arg, port_arg, fd_arg = sys.argv[1:]
    main(int(rank_arg), int(ranks_arg), device_arg, int(port_arg), multiprocessing.connection.Connection(int(fd_arg)))
