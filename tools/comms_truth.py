"""Collectives timed apart from the suite: a CUDA graph of N back-to-back NCCL calls on every GPU,
replayed in a loop and timed with events on rank 0, as nccl-tests' -G does. Compare with the suite's
time_forward of the same collective and size (`variantbench run --family comms`), same machine.
    python tools/comms_truth.py [--sizes 8192,1048576,1073741824] [--ops all_reduce,reduce_scatter]
Prints us per collective for graphs of 10 to 400 calls, with the SM clock during the replays.
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
    numel = nbytes // 2  # bf16
    x = torch.randn(numel, device=f"cuda:{rank}").to(torch.bfloat16)
    if op == "all_reduce":
        return lambda: dist.all_reduce(x)
    out = torch.empty(numel // ranks, dtype=torch.bfloat16, device=f"cuda:{rank}")
    return lambda: dist.reduce_scatter_tensor(out, x)


def rank_main(rank, ranks, port, ops, sizes, per_graph, queue):
    os.environ.update(MULTICAST_OFF)
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="8192,1048576,1073741824")
    parser.add_argument("--ops", default="all_reduce,reduce_scatter")
    args = parser.parse_args()
    ranks = torch.cuda.device_count()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    sizes = [int(s) for s in args.sizes.split(",")]
    procs = [ctx.Process(target=rank_main, args=(r, ranks, 29511, args.ops.split(","), sizes, (10, 25, 50, 100, 400), queue))
             for r in range(ranks)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print(f"{ranks} GPUs: {'op':16} {'bytes':>11} {'calls/graph':>11} {'us/op':>9} {'MHz':>6}")
    while not queue.empty():
        op, nbytes, count, us, mhz = queue.get()
        print(f"{'':8}{op:16} {nbytes:11d} {count:11d} {us:9.2f} {mhz:6.0f}")


if __name__ == "__main__":
    main()
