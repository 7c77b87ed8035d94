"""Collectives timed apart from the suite: a CUDA graph of N back-to-back NCCL calls on every GPU,
replayed in a loop and timed with events on rank 0, as nccl-tests' -G does. Compare with the suite's
time_forward of the same collective and size (`variantbench run --family comms`), same machine.
    python tools/comms_truth.py [--sizes 8192,1048576,1073741824] [--ops all_reduce,reduce_scatter]
        [--nodes 2 --calls 2,5]
Prints us per collective and nccl-tests' bus bandwidth for graphs of --calls calls, with the SM clock
during the replays. --nodes N gives each 1/N of the ranks its own NCCL_HOSTID, so NCCL joins them
through its network transport as between hosts: the independent check of the suite's two torchrun
"nodes" (tools/torchrun_nodes.sh), whose 64 MiB collectives take ~20 ms over sockets.
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def collective(op, nbytes, rank, ranks):
    """One call of `op` on a per-rank buffer of `nbytes` (bfloat16), as the suite's comms shapes size
    it (kernels/comms/nccl.py): all_gather's output is `ranks` such buffers, reduce_scatter's 1/ranks
    of one. (Before session 13 all_gather here took 1/ranks of `nbytes` in: a quarter of the suite's
    call at 4 ranks, and its 64 MiB figure no check of the suite's.)"""
    numel = nbytes // 2
    x = torch.randn(numel, device=f"cuda:{rank}").to(torch.bfloat16)
    if op == "all_gather":
        gathered = torch.empty(numel * ranks, dtype=torch.bfloat16, device=f"cuda:{rank}")
        return lambda: dist.all_gather_into_tensor(gathered, x)
    if op == "reduce_scatter":
        share = torch.empty(numel // ranks, dtype=torch.bfloat16, device=f"cuda:{rank}")
        return lambda: dist.reduce_scatter_tensor(share, x)
    return lambda: dist.all_reduce(x)


OPS = ("all_reduce", "all_gather", "reduce_scatter")


def bus_gbps(op, nbytes, ranks, us):
    """nccl-tests' bus bandwidth by the suite's own rules (variantbench/catalog/comms.py): the op's
    algorithm bytes over per-rank buffers of `nbytes`, times its bus factor, per second."""
    from variantbench.catalog import family

    variant = family("comms").variant(op)
    return variant.bytes_moved(nbytes, ranks) * variant.bus_bandwidth_factor(ranks) / (us * 1e-6) / 1e9


def rank_main(rank, ranks, port, ops, sizes, per_graph, nodes, queue):
    os.environ.update(MULTICAST_OFF)
    if nodes > 1:
        os.environ["NCCL_HOSTID"] = f"vb-node-{rank // (ranks // nodes)}"
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks)
    from variantbench.power import Sampler

    sampler = Sampler(torch.device("cuda", rank)).__enter__()
    for op in ops:
        for nbytes in sizes:
            call = collective(op, nbytes, rank, ranks)
            call()
            torch.cuda.synchronize()
            for count in per_graph:
                if nbytes >= 2**28 and count > 50:
                    continue
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    for _ in range(count):
                        call()
                for _ in range(3):
                    graph.replay()
                torch.cuda.synchronize()
                dist.barrier()
                import time

                t0 = time.perf_counter()
                times = []
                for _ in range(20):
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    graph.replay()
                    end.record()
                    times.append((start, end))
                torch.cuda.synchronize()
                state = sampler.windows([(t0, time.perf_counter())])
                us = statistics.median(s.elapsed_time(e) for s, e in times) * 1e3 / count
                if rank == 0:
                    queue.put((op, nbytes, count, us, state.sm_clock_mhz if state else float("nan")))
                graph.reset()
    sampler.__exit__()
    dist.barrier()
    dist.destroy_process_group()


def counts(text):
    """A comma-separated list of positive integers (argparse then says which argument is wrong)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers")
    return values


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=counts, default="8192,1048576,1073741824",
                        help="bytes of each rank's buffer, as the suite's comms shapes (comms-64m: 67108864)")
    parser.add_argument("--ops", default="all_reduce,reduce_scatter")
    parser.add_argument("--nodes", type=int, default=1, help="simulated hosts, each 1/N of the GPUs")
    parser.add_argument("--calls", type=counts, default="10,25,50,100,400",
                        help="collectives per CUDA graph, a graph each")
    args = parser.parse_args()
    ranks = torch.cuda.device_count()
    if ranks == 0:
        parser.exit(2, "comms_truth: no CUDA GPU visible\n")
    ops = args.ops.split(",")
    unknown = [op for op in ops if op not in OPS]
    if unknown or args.nodes < 1 or ranks % args.nodes:
        parser.error(f"ops are {', '.join(OPS)} (not {unknown}); {ranks} GPUs over {args.nodes} nodes")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    sizes, per_graph = args.sizes, args.calls
    procs = [ctx.Process(target=rank_main, args=(r, ranks, 29511, ops, sizes, per_graph, args.nodes, queue))
             for r in range(ranks)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print(f"{ranks} GPUs over {args.nodes} node(s): {'op':16} {'bytes':>11} {'calls/graph':>11} {'us/op':>9} "
          f"{'bus GB/s':>9} {'MHz':>6}")
    while not queue.empty():
        op, nbytes, count, us, mhz = queue.get()
        bus = bus_gbps(op, nbytes, ranks, us)
        print(f"{'':24}{op:16} {nbytes:11d} {count:11d} {us:9.2f} {bus:9.2f} {mhz:6.0f}")


if __name__ == "__main__":
    main()
