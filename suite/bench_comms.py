"""Collective benchmarks: every variant at every message size, over all the machine's GPUs (one
process each, rank 0 being asv's benchmark process; skipped with the reason below 2 GPUs), or 2 gloo
processes on the CPU.

time_forward is per collective (a call runs many back to back; see kernels/comms/nccl.py). The
tracks give nccl-tests' bus bandwidth (track_gbps; the work model counts bus bytes) and the ratio to
the all-reduce at the same size; setup checks every rank's output against the reference first.
"""

from suite.common import Benchmark, grid, once_per_process, resolve_or_skip
from variantbench import cases, timing

PARAMS, PARAM_NAMES = grid("comms")


def _metrics(case):
    return once_per_process(case.name + "/metrics", lambda: cases.metrics(case))


class CommsForward(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("comms", variant, implementation, shape)

        def build():
            problem, call, check = cases.prepare_checked(case)
            cases.metrics(case, prepared=(problem, call, check))
            return timing.batched(call, problem.device)

        self.body = once_per_process(case.name, build)

    def time_forward(self, variant, implementation, shape):
        self.body()


class CommsMetrics(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        self.metrics = _metrics(resolve_or_skip("comms", variant, implementation, shape))

    def track_gbps(self, *params):
        return self.metrics["gbps"]

    track_gbps.unit = "GB/s bus bandwidth"

    def track_ratio_to_baseline(self, *params):
        return self.metrics["ratio_to_baseline"]

    track_ratio_to_baseline.unit = "x all-reduce cost per bus byte"

    def track_ratio_noise(self, *params):
        return self.metrics["ratio_noise"]

    track_ratio_noise.unit = "relative IQR"

    def track_max_error(self, *params):
        return self.metrics["max_error"]

    track_max_error.unit = "max abs error vs float64"
