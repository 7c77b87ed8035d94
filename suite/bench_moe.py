"""MoE benchmarks: every supported (router variant, implementation, shape) of the catalog, where the
shape carries the model, the token count and the routing load (uniform or Zipf-skewed). The classes
are the shared suite classes (suite/common.py); the baseline is softmax top-k through grouped_mm.
"""

from suite.common import (ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark, PowerBenchmark,
                          ReferenceSpeedupBenchmark, TimingModeBenchmark)


class MoEForward(ForwardBenchmark):
    family = "moe"


class MoEMetrics(MetricsBenchmark):
    family = "moe"


class MoEReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "moe"


class MoEPeakMemory(PeakMemoryBenchmark):
    family = "moe"


class MoEForwardPower(PowerBenchmark):
    family = "moe"


class MoETimingMode(TimingModeBenchmark):
    family = "moe"
