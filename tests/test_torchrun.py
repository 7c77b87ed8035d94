"""Collectives through torchrun on the CPU: two torchrun agents on this machine stand for two nodes of
two ranks each, gloo between them (node 0: this test process as rank 0 and one worker; node 1: two
workers). They serve one rank 0 after another, and a worker that dies fails the next case in one line.
A bad VARIANTBENCH_RANKS is one line too, and the machine's name counts nodes x ranks per node."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernels.comms import nccl, ranks, torchrun
from variantbench import cases, check_workers, device
from variantbench.catalog import family
from variantbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
# Another rank 0, a process of its own, which ends as asv ends a benchmark: os._exit, no stop.
DRIVER = """
import os
from variantbench import cases, check_workers
from kernels.comms import nccl
result = check_workers.check_one(cases.resolve("comms", "all_to_all", "nccl", "comms-cpu-4k", "cpu"))
print(result.line, "| session", nccl._workers[0].session, flush=True)
os._exit(0 if result.status == "ok" else 1)
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parent_of(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def two_nodes(tmp_path):
    """Two torchrun agents (node 0: 1 worker, --gpu-offset 1, hosting the control store; node 1: 2
    workers): (the agents, the control address). Everything they start is stopped on the way out.
    Node 0's agent hosts the rendezvous, as the agent on the endpoint's host does across machines
    (here both are on it, and whichever bound the port first did: node 0's agent then died with node
    1's, as it lost the rendezvous)."""
    rendezvous, control = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {key: value for key, value in os.environ.items() if key != ranks.ENV}
    env.update(TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")  # torchrun's log folders go under tmp_path
    agents, logs = [], []
    try:
        for node, (workers, offset) in enumerate(((1, 1), (2, 0))):
            logs.append(open(tmp_path / f"node{node}.log", "w"))
            agents.append(subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
                 "--nproc-per-node", str(workers), "--rdzv-backend", "c10d", "--rdzv-endpoint", rendezvous,
                 "--rdzv-id", "vb-test", "--rdzv-conf", f"is_host={node == 0}",
                 "-m", "kernels.comms.serve_ranks", "--control", control,
                 "--gpu-offset", str(offset)],
                cwd=ROOT, env=env, stdout=logs[-1], stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True))
        yield agents, control
    finally:
        for agent in agents:  # SIGTERM: an agent stops its workers; their session processes go with them
            if agent.poll() is None:
                agent.terminate()
        for agent in agents:
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        for log in logs:
            log.close()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; session processes die with their worker by prctl")
def test_two_nodes_of_torchrun_workers_serve_every_collective_to_rank_0_after_rank_0(tmp_path, monkeypatch):
    nccl._stop()  # this process's ranks from earlier tests (started here) and their group
    with two_nodes(tmp_path) as (agents, control):
        monkeypatch.setenv(ranks.ENV, f"torchrun://{control}")
        monkeypatch.setattr(ranks, "_served", {})
        try:
            world = ranks.served()
            assert world.ranks == 4 and world.per_node() == [2, 2]
            facts = device.identity("cpu")
            assert (facts["nodes"], facts["ranks_per_node"]) == (2, "2,2")
            assert device.machine_name(facts).endswith("-2x2")

            # Session 1, this process: every collective of the family over the 4 ranks.
            for variant in family("comms").variants:
                result = check_workers.check_one(cases.resolve("comms", variant.name, "nccl", "comms-cpu-4k", "cpu"))
                assert result.status == "ok", result.line
            assert nccl._workers[0].ranks == 4
            first = nccl._workers[0].session
            nccl._stop()

            # Session 2: a rank 0 of its own that leaves without a word; session 3: this one at once.
            driver = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, capture_output=True, text=True,
                                    timeout=120)
            assert driver.returncode == 0 and f"| session {first + 1}" in driver.stdout, driver.stdout + driver.stderr
            result = check_workers.check_one(cases.resolve("comms", "all_gather", "nccl", "comms-cpu-4k", "cpu"))
            assert result.status == "ok", result.line
            assert nccl._workers[0].session == first + 2
            # and a block split over the same 4 ranks (kernels/block/parallel.py) in that session
            case = cases.resolve("block", "llama-3-8b", "tensor_parallel", "tiny-prefill-b2-s48", "cpu")
            result = check_workers.check_one(case)
            assert result.status == "ok" and "over 4 ranks" in result.line, result.line

            # A worker killed: its agent stops its node; the next case fails at once, naming the rank.
            on_node_1 = [rank for rank, w in enumerate(world.workers, 1) if parent_of(w["pid"]) == agents[1].pid]
            os.kill(world.workers[on_node_1[0] - 1]["pid"], signal.SIGKILL)
            assert agents[1].wait(timeout=30) != 0
            t0 = time.perf_counter()
            result = check_workers.check_one(cases.resolve("comms", "reduce_scatter", "nccl", "comms-cpu-4k", "cpu"))
            assert time.perf_counter() - t0 < 10
            assert result.status == "error" and "\n" not in result.line, result.line
            assert f"RankGone: rank {on_node_1[0]} (torchrun worker {on_node_1[0] - 1} " in result.line, result.line
            assert f"after its last case; so did rank(s) {on_node_1[1]} (" in result.line, result.line
        finally:
            nccl._stop()


@pytest.mark.parametrize("value, said", [
    ("mpi://node0:29500", "unknown scheme 'mpi'"),
    ("node0:29500", "unknown scheme 'node0:29500'"),
    ("torchrun://node0", "expected torchrun://HOST:PORT"),
])
def test_a_bad_ranks_variable_is_one_line_and_exit_2(monkeypatch, value, said):
    monkeypatch.setenv(ranks.ENV, value)
    monkeypatch.setattr(ranks, "_served", {})
    with pytest.raises(ranks.BadRanks, match=said):
        ranks.world("cpu")
    result = CliRunner().invoke(main, ["check", "--family", "comms", "--device", "cpu"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and said in lines[0], result.output
    assert "torchrun://HOST:PORT" in lines[0]


def test_a_control_store_nobody_serves_is_one_line_asked_once(monkeypatch):
    monkeypatch.setenv(ranks.ENV, f"torchrun://127.0.0.1:{free_port()}")
    monkeypatch.setattr(ranks, "_served", {})
    monkeypatch.setattr(torchrun, "TIMEOUT", torchrun.datetime.timedelta(seconds=1))
    said = "no control store answers there .*start the ranks' torchrun agents"
    with pytest.raises(ranks.BadRanks, match=said):
        ranks.world("cpu")
    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["check", "--family", "comms", "--device", "cpu"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert time.perf_counter() - t0 < 1  # the answer of the first ask, not another wait


def test_machine_names_count_nodes_and_ranks_per_node_and_keep_one_node_as_it_was():
    h200 = {"device": "cuda", "gpu": "NVIDIA H200", "gpu_count": 4}
    assert device.machine_name(h200) == "nvidia-h200-x4"
    assert device.machine_name({**h200, "nodes": 1, "ranks_per_node": "4"}) == "nvidia-h200-x4"
    assert device.machine_name({**h200, "nodes": 2, "ranks_per_node": "2,2"}) == "nvidia-h200-2x2"
    assert device.machine_name({**h200, "gpu_count": 6, "nodes": "2", "ranks_per_node": "2,4"}) == "nvidia-h200-nodes-2-4"
