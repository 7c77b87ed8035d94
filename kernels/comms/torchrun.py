"""Ranks 1..n-1 as torchrun workers on one or more nodes (VARIANTBENCH_RANKS=torchrun://HOST:PORT),
serving one rank 0 after another: asv starts a process per benchmark, and each is rank 0 of its cases.

They meet at the control store HOST:PORT, a TCPStore that the first worker of the driver's node
hosts (kernels/comms/serve_ranks.py, which says how to start them). Its keys:

  world       torchrun's WORLD_SIZE: the workers; with rank 0 the world has one rank more
  worker/R    torchrun worker R's record (JSON): node, ranks on its node, host, pid, whether it hosts
              the store (rank 0 must run on that host: its workers reach it there)
  session     how many sessions rank-0 processes have opened (each adds 1)
  sN/open     session N's invitation (JSON): rank 0's address and token, the device, the ranks, env
  sN/pg/...   session N's process group rendezvous (init_process_group's store)

A session: rank 0 opens it, listening on a TCP port; each worker's session process (a fresh process
per session, which its worker starts) connects, says hello with the token, and waits; once every
rank is there rank 0 says "join", and all join session N's process group (worker R is rank R + 1);
then each serves rank 0's messages on that connection exactly as a local rank serves them on its
socket pair (nccl.serve). Rank 0 exiting closes the connection and the session process leaves at
once, without destroying a group whose peer is gone (that can block), and its worker starts the next
one. A session process that dies closes its end too: rank 0's next read names it.

Messages go over that TCP connection rather than through store keys: every call's "run" message
starts the ranks' collectives late by its delay, which CALL_MS (5 ms) keeps to a few percent. On a
2-core CPU machine a pickled "run" took 25 us (p90 27-29 us) over TCP on one host and 18 us (p90
21-42 us) over the local socket pair, where a TCPStore key set by one process took 101 us (p90 150
us) to reach a process blocked on it. Across nodes add the network's one-way latency.
"""

import contextlib
import ctypes
import datetime
import json
import multiprocessing.connection
import os
import pickle
import secrets
import signal
import socket
import sys
import threading
import time

import torch
import torch.distributed as dist

from kernels.comms.ranks import ENV, MULTICAST_OFF, TIMEOUT, BadRanks, Peers, join
from variantbench.progress import stall_dumps

# How long a session process waits for its session before it exits (its worker starts another).
IDLE = datetime.timedelta(days=7)
HELLO_S = 10  # a session process connects and says hello within ms; a silent connection is a stranger
# What rank 0's environment gives its session's ranks: plug-ins (their variants must exist on every
# rank; paths must be the same on every node), the Triton interpreter switch, and the run's folder
# for stalled ranks' stacks (kept where the rank's node sees it: one host, or a shared filesystem).
FORWARDED = ("VARIANTBENCH_PLUGINS", "TRITON_INTERPRET", "PYTHONPATH", "VARIANTBENCH_RUN_DIR")


def host_port(where):
    host, sep, port = where.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BadRanks(f"{ENV}=torchrun://{where}: expected torchrun://HOST:PORT")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def _quiet_stderr():
    """torch's C++ side writes a 35-frame stack to stderr for each failed connection attempt; the
    BadRanks line says what failed."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def connect(where, timeout):
    """A client of the control store; BadRanks where none answers within `timeout`."""
    host, port = host_port(where)
    try:
        with _quiet_stderr():
            return dist.TCPStore(host, port, is_master=False, timeout=timeout)
    except RuntimeError as error:  # DistNetworkError, DistStoreError
        raise BadRanks(f"{ENV}=torchrun://{where}: no control store answers there ({str(error).splitlines()[0]}); "
                       "start the ranks' torchrun agents first (kernels/comms/serve_ranks.py)") from None


class Control:
    """The served world at `where`, as a rank 0 sees it: `ranks` (the workers and rank 0), `workers`
    (their records, by torchrun rank) and `session(device)`, which opens one."""

    def __init__(self, where):
        self.where = where
        self.host, _ = host_port(where)
        self.store = connect(where, TIMEOUT)
        self.workers = self._records()
        self.ranks = len(self.workers) + 1
        hosts = {w["host"] for w in self.workers if w["hosting"]}
        if hosts != {socket.gethostname()}:
            raise BadRanks(f"{ENV}=torchrun://{where}: rank 0 runs on {socket.gethostname()}, but the control store "
                           f"is on {', '.join(sorted(hosts)) or 'no node'}: run it on the node started with --gpu-offset 1")

    def _records(self):
        deadline = time.monotonic() + TIMEOUT.total_seconds()
        keys = None
        while True:
            if keys is None and self.store.check(["world"]):
                keys = [f"worker/{r}" for r in range(int(self.store.get("world")))]
            missing = [key for key in keys or ["world"] if not self.store.check([key])]
            if not missing:
                return [json.loads(self.store.get(key)) for key in keys]
            if time.monotonic() > deadline:
                raise BadRanks(f"{ENV}=torchrun://{self.where}: {', '.join(missing)} not registered within "
                               f"{TIMEOUT.total_seconds():.0f} s: is every node's torchrun agent running?")
            time.sleep(0.1)

    def per_node(self):
        """Ranks on each node, in the rendezvous' node order (rank 0 counts on its own node)."""
        nodes = {w["node"]: w["ranks_on_node"] for w in self.workers}
        return [nodes[node] for node in sorted(nodes)]

    def session(self, device):
        return TorchrunPeers.open(self, device)


class TorchrunPeers(Peers):
    errors = "its error is in its node's torchrun output"
    stacks = "its stack is in the run's progress log where its node sees the run's folder"

    def __init__(self, links, hellos, session):
        super().__init__(links)
        self.hellos, self.session = hellos, session

    def exited(self, rank):
        hello = self.hellos[rank]
        return f"(torchrun worker {rank - 1} on {hello['host']}, session process {hello['pid']}) exited"

    @classmethod
    def open(cls, control, device):
        """Open a session of `control`'s world and join it as rank 0 (on GPU 0 where on CUDA)."""
        family = socket.getaddrinfo(control.host, None)[0][0]
        store, token = control.store, secrets.token_hex(16)
        links, hellos = {}, {}
        with socket.create_server(("", 0), family=family) as listener:  # every interface: other nodes connect
            # Rank 0 runs where the control store is (Control checks it): every worker reaches it there.
            address = [control.host, listener.getsockname()[1]]
            session = store.add("session", 1)
            env = {key: os.environ[key] for key in FORWARDED if key in os.environ}
            store.set(f"s{session}/open", json.dumps({"address": address, "token": token, "device": device,
                                                      "ranks": control.ranks, "env": env}))
            deadline = time.monotonic() + TIMEOUT.total_seconds()
            while len(links) < control.ranks - 1:
                listener.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    sock, _ = listener.accept()
                except TimeoutError:
                    missing = [r for r in range(1, control.ranks) if r not in links]
                    for link in links.values():
                        link.close()
                    raise TimeoutError(
                        f"rank(s) {', '.join(map(str, missing))} (torchrun workers) did not join session {session} "
                        f"within {TIMEOUT.total_seconds():.0f} s: is a worker still serving an earlier rank 0, "
                        "or its node's agent gone?") from None
                link = multiprocessing.connection.Connection(sock.detach())
                hello = _hello(link, token, control.ranks, links)
                if hello:
                    links[hello["rank"]], hellos[hello["rank"]] = link, hello
        gpus = {0: torch.cuda.get_device_name(0) if device == "cuda" else None}
        gpus.update((rank, hello["gpu"]) for rank, hello in sorted(hellos.items()))
        if len(set(gpus.values())) > 1:  # closed, the connections send the session processes home
            for link in links.values():
                link.close()
            raise BadRanks(f"session {session}: the ranks' GPUs differ ({gpus}); one machine's figures need one model")
        peers = cls(dict(sorted(links.items())), hellos, session)
        peers.send(("join",))
        join(0, control.ranks, device, 0, store=dist.PrefixStore(f"s{session}/pg", store))
        return peers


def _hello(link, token, ranks, links):
    """A session process's hello (JSON: token, rank, pid, host, gpu), or None for anything else (the
    port is open on every interface), whose connection is closed."""
    try:
        if link.poll(HELLO_S):
            hello = json.loads(link.recv_bytes(maxlength=4096))
            if hello.get("token") == token and hello.get("rank") in range(1, ranks) and hello["rank"] not in links:
                return hello
    except (OSError, EOFError, ValueError, AttributeError):
        pass
    link.close()
    return None


def _die_with_parent(parent):
    """A session process must not outlive its torchrun worker: the agent counts the worker, and a
    worker killed must take its rank with it (PR_SET_PDEATHSIG, Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _invited(store):
    """(session, invitation, connection to its rank 0) of the latest session whose rank 0 still
    listens: one opened while this process started (its worker's previous one had just left) counts;
    one whose rank 0 is gone or already started refuses the connection, and the next one is awaited."""
    session = max(1, store.add("session", 0))
    while True:
        invitation = json.loads(store.get(f"s{session}/open"))  # blocks until a rank 0 opens it (IDLE)
        latest = store.add("session", 0)
        if latest > session:
            session = latest
            continue
        try:
            sock = socket.create_connection(tuple(invitation["address"]), timeout=HELLO_S)
        except OSError:
            session += 1
            continue
        sock.settimeout(None)
        return session, invitation, multiprocessing.connection.Connection(sock.detach())


def session_main(where, gpu_offset, parent):
    """One session of torchrun worker RANK: rank RANK + 1, on GPU LOCAL_RANK + gpu_offset."""
    _die_with_parent(parent)
    os.environ.update(MULTICAST_OFF)  # before anything touches CUDA (join sets it too, for rank 0)
    rank = int(os.environ["RANK"]) + 1
    gpu = int(os.environ["LOCAL_RANK"]) + gpu_offset
    store = connect(where, IDLE)
    session, invitation, link = _invited(store)
    device, ranks = invitation["device"], invitation["ranks"]
    gpu_name = torch.cuda.get_device_name(gpu) if device == "cuda" else None
    link.send_bytes(json.dumps({"token": invitation["token"], "rank": rank, "pid": os.getpid(),
                                "host": socket.gethostname(), "gpu": gpu_name}).encode())
    try:
        word = pickle.loads(link.recv_bytes())
    except (EOFError, OSError):  # rank 0 gave up on the session (another rank never came) or is gone
        os._exit(0)
    if word != ("join",):
        raise RuntimeError(f"session {session}: rank 0 said {word!r} where it says ('join',)")
    env = invitation["env"]
    if not os.path.isdir(env.get("VARIANTBENCH_RUN_DIR", "")):
        env.pop("VARIANTBENCH_RUN_DIR", None)
    os.environ.update(env)
    sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    print(f"rank {rank} of {ranks} joins session {session} ({device})", flush=True)
    with stall_dumps():
        join(rank, ranks, device, gpu, store=dist.PrefixStore(f"s{session}/pg", store))
    from kernels.comms import nccl

    nccl.serve(link, rank, ranks, device)
    # Rank 0 said stop: leave cleanly, but never wait on a group more than TIMEOUT (a peer may be gone).
    threading.Timer(TIMEOUT.total_seconds(), os._exit, (0,)).start()
    nccl.leave()
    os._exit(0)


if __name__ == "__main__":
    # A session process started by serve_ranks.py: the control address, the GPU offset, its worker's pid.
    session_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
