"""Attention benchmarks: every supported (variant, implementation, shape) of the catalog.

The forward, its metrics, the speedup over the reference and peak memory are the shared suite
classes (suite/common.py); forward+backward is attention's own.
"""

from suite.common import (Benchmark, ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark, PowerBenchmark,
                          PowerRecorded, ReferenceSpeedupBenchmark, TimingModeBenchmark, grid, once_per_process,
                          resolve_or_skip)
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
            # Eager calls on one input set, unlike the forward (variantbench.replay): only prefill has a
            # backward, and its least (mqa at llama-3-8b-s1k) moves 0.83 GB in about a millisecond a
            # call (0.48 TFLOP): 8x the 2 x 50 MiB of an H100's L2, 20x the 50 us under which a call is
            # replayed as a graph. Capturing autograd would be machinery no case of the grid runs.
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


class AttentionTimingMode(TimingModeBenchmark):
    family = "attention"


class AttentionForwardPower(PowerBenchmark):
    family = "attention"


class AttentionForwardBackwardPower(PowerBenchmark):
    family = "attention"
    timed = "forward_backward"
