"""Collectives outside asv, one process per GPU as the suite runs them: prepares and checks each
collective (graph capture and its check included) and prints the median time per collective over
20 calls and its bus bandwidth. A quick look before a full `variantbench run --family comms`:
    python tools/comms_probe.py [shape ...]      (default: comms-8k comms-1g)
Exit 2 with one line for an unknown shape or fewer than 2 GPUs; 1 for a collective that fails its check.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from variantbench import cases  # noqa: E402
from variantbench.catalog import Unsupported, family  # noqa: E402

CALLS = 20


def main(shapes):
    comms = family("comms")
    # every case resolved before any is run: a bad shape or a missing GPU says so before any output
    probes = [cases.resolve("comms", variant.name, "nccl", shape, "cuda")
              for shape in shapes for variant in comms.variants]
    print(f"{'case':42} {'repeats':>8} {'us':>10} {'bus GB/s':>9}")
    for case in probes:
        problem, call, _ = cases.prepare_checked(case)
        seconds = []
        for _ in range(CALLS):
            t0 = time.perf_counter()
            call()  # ends with a device synchronisation on rank 0
            seconds.append((time.perf_counter() - t0) / call.repeats)
        per_collective = statistics.median(seconds)
        _, bus_bytes = comms.work(case.variant, problem)
        print(f"{case.name:42} {call.repeats:8d} {per_collective * 1e6:10.2f} {bus_bytes / per_collective / 1e9:9.1f}",
              flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1:] or ["comms-8k", "comms-1g"])
    except (Unsupported, cases.Mismatch) as error:
        print(f"comms_probe: {error}", file=sys.stderr)
        sys.exit(1 if isinstance(error, cases.Mismatch) else 2)  # a wrong collective; bad input or no GPUs
