"""A torchrun worker serving collective ranks to one rank 0 after another (kernels/comms/torchrun.py).

With N GPUs on each of M nodes, from the same checkout path on every node (node0 is the driver's
node, the one `variantbench run` and asv's benchmarks run on; its GPU 0 is rank 0's):

  # node 0: one worker fewer than it has GPUs; its workers use GPUs 1..N-1, and its first hosts the
  # control store at node0:29500
  python -m torch.distributed.run --nnodes M --node-rank 0 --nproc-per-node N-1 \\
      --rdzv-backend c10d --rdzv-endpoint node0:29400 --rdzv-id vb \\
      -m kernels.comms.serve_ranks --control node0:29500 --gpu-offset 1
  # every other node: a worker per GPU
  python -m torch.distributed.run --nnodes M --node-rank K --nproc-per-node N \\
      --rdzv-backend c10d --rdzv-endpoint node0:29400 --rdzv-id vb \\
      -m kernels.comms.serve_ranks --control node0:29500
  # then, on node 0 (rank 0 must run there: the workers reach it at the control store's address)
  VARIANTBENCH_RANKS=torchrun://node0:29500 variantbench run ...

node0 is an address of node 0 that every node reaches (an IP, or a name that no node resolves to a
loopback address).

The world is rank 0 and torchrun's WORLD_SIZE workers; torchrun worker R is rank R + 1. Agents may
run different worker counts: torch elastic numbers every agent's workers after the workers of the
agents before it (torch 2.13, agents of 1 and 2 workers: RANK 0 and 1-2, WORLD_SIZE 3 on both; leave
TORCH_ELASTIC_WORKER_IDENTICAL unset, which assumes equal counts). Which agent comes first is the
c10d rendezvous' choice (it ignores --node-rank), and nothing depends on it: `--gpu-offset 1` marks
the driver's node. The machine is then named for nodes x GPUs per node
(`nvidia-h200-2x2`), never mixed with one node's four GPUs in the history. The collectives and
tensor-parallel blocks run over the world; everything else runs on rank 0's GPU as without it.

A worker runs each session in a fresh process (a rank 0 that dies leaves no half-destroyed NCCL group
behind), and starts the next as soon as one ends. A worker that fails stops its agent (torchrun's
--max-restarts 0), and an agent that stops takes the others down where it hosted the rendezvous
(node 0's agent does, the one on the endpoint's host; two agents on one machine need --rdzv-conf
is_host=true and is_host=false to say which): restart every agent. The store and the session ports take no password: run them
on a network you trust, as torch.distributed itself.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch.distributed as dist

from kernels.comms.ranks import TIMEOUT
from kernels.comms.torchrun import host_port

ROOT = Path(__file__).resolve().parents[2]
# A session process that fails this soon after it started, this many times in a row, cannot start
# (an import error, a store that is gone): the worker stops, and torchrun reports it.
QUICK_S, QUICK_FAILURES = 30, 3


def register(store, gpu_offset, hosting):
    """This worker's record in the control store (torchrun.Control reads it)."""
    rank = int(os.environ["RANK"])
    store.set("world", os.environ["WORLD_SIZE"])
    store.set(f"worker/{rank}", json.dumps({
        "node": int(os.environ["GROUP_RANK"]), "ranks_on_node": int(os.environ["LOCAL_WORLD_SIZE"]) + gpu_offset,
        "host": socket.gethostname(), "pid": os.getpid(), "hosting": hosting}))
    return rank


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m torch.distributed.run ... -m kernels.comms.serve_ranks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, metavar="HOST:PORT",
                        help="the control store: hosted by the first worker of the --gpu-offset node")
    parser.add_argument("--gpu-offset", type=int, default=0,
                        help="1 on the driver's node: its workers use GPU LOCAL_RANK + 1, GPU 0 is rank 0's")
    args = parser.parse_args(argv)
    host, port = host_port(args.control)
    hosting = args.gpu_offset > 0 and os.environ["LOCAL_RANK"] == "0"
    store = dist.TCPStore(host, port, is_master=hosting, wait_for_workers=False, timeout=TIMEOUT)
    rank = register(store, args.gpu_offset, hosting)
    print(f"torchrun worker {rank} serves rank {rank + 1} through {args.control}"
          f"{' (hosting it)' if hosting else ''}", flush=True)
    failures = 0
    while True:
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "kernels.comms.torchrun", args.control, str(args.gpu_offset),
                                str(os.getpid())], cwd=ROOT)
        if code == 0:
            failures = 0
            continue
        print(f"torchrun worker {rank}: its session process exited with code {code}", file=sys.stderr, flush=True)
        failures = failures + 1 if time.monotonic() - started < QUICK_S else 1
        if failures >= QUICK_FAILURES:
            sys.exit(f"torchrun worker {rank}: {failures} session processes in a row failed at start")


if __name__ == "__main__":
    main()
