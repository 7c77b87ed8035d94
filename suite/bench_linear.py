"""Linear-attention benchmarks: every supported (variant, implementation, shape) of the linear family,
where the shape carries the model and the token count. The classes are the shared suite classes
(suite/common.py); the baseline is Gated DeltaNet through flash-linear-attention's chunked kernel.

Forward+backward times fla's and compiled's backward (ours is forward-only, skipped in its setup); the
linear family's GPU shapes are all in the full tier, so the default tier times no linear backward.
"""

from suite.common import (ForwardBackwardBenchmark, ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark,
                          PowerBenchmark, ReferenceSpeedupBenchmark, TimingModeBenchmark)


class LinearForward(ForwardBenchmark):
    family = "linear"


class LinearForwardBackward(ForwardBackwardBenchmark):
    family = "linear"


class LinearMetrics(MetricsBenchmark):
    family = "linear"


class LinearReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "linear"


class LinearPeakMemory(PeakMemoryBenchmark):
    family = "linear"


class LinearForwardPower(PowerBenchmark):
    family = "linear"


class LinearForwardBackwardPower(PowerBenchmark):
    family = "linear"
    timed = "forward_backward"


class LinearTimingMode(TimingModeBenchmark):
    family = "linear"
