"""Linear-attention benchmarks: every supported (variant, implementation, shape) of the linear family,
where the shape carries the model and the token count. The classes are the shared suite classes
(suite/common.py); the baseline is Gated DeltaNet through flash-linear-attention's chunked kernel."""

from suite.common import (ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark, PowerBenchmark,
                          ReferenceSpeedupBenchmark, TimingModeBenchmark)


class LinearForward(ForwardBenchmark):
    family = "linear"


class LinearMetrics(MetricsBenchmark):
    family = "linear"


class LinearReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "linear"


class LinearPeakMemory(PeakMemoryBenchmark):
    family = "linear"


class LinearForwardPower(PowerBenchmark):
    family = "linear"


class LinearTimingMode(TimingModeBenchmark):
    family = "linear"
