"""Attention benchmarks: every supported (variant, implementation, shape) of the catalog.

The forward, its metrics, the speedup over the reference and peak memory are the shared suite
classes (suite/common.py); forward+backward is attention's own.
"""

from suite.common import (Benchmark, ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark, PowerBenchmark,
                          PowerRecorded, ReferenceSpeedupBenchmark, grid, once_per_process, resolve_or_skip)
from variantbench import cases, timing


class AttentionForward(ForwardBenchmark):
    family = "attention"


class AttentionForwardBackward(PowerRecorded, Benchmark):
    params, param_names = grid("attention")
    timed = "forward_backward"

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("attention", variant, implementation, shape)
        reason = cases.backward_unsupported(case)
        if reason:
            raise NotImplementedError(reason)

        def build():
            problem, call, _ = cases.prepare_checked(case, requires_grad=True)
            return timing.batched(cases.forward_backward(problem, call), problem.device)

        self.body = once_per_process(case.name + "/backward", build)
        self.record_power(case)

    def time_forward_backward(self, variant, implementation, shape):
        self.body()


class AttentionMetrics(MetricsBenchmark):
    family = "attention"


class AttentionReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "attention"


class AttentionPeakMemory(PeakMemoryBenchmark):
    family = "attention"


class AttentionPower(PowerBenchmark):
    family = "attention"


class AttentionForwardBackwardPower(PowerBenchmark):
    family = "attention"
    timed = "forward_backward"
