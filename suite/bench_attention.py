"""Attention benchmarks: every supported (variant, implementation, shape) of the catalog.

The forward, forward+backward, their metrics, the speedup over the reference and peak memory are
the shared suite classes (suite/common.py).
"""

from suite.common import (ForwardBackwardBenchmark, ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark,
                          PowerBenchmark, ReferenceSpeedupBenchmark, TimingModeBenchmark)


class AttentionForward(ForwardBenchmark):
    family = "attention"


class AttentionForwardBackward(ForwardBackwardBenchmark):
    family = "attention"


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
