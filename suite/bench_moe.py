"""MoE benchmarks: every supported (router variant, implementation, shape) of the catalog, where the
shape carries the model, the token count and the routing load (uniform or Zipf-skewed). The classes
are the shared suite classes (suite/common.py); the baseline is softmax top-k through grouped_mm.
"""

from suite.common import (ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark, PowerBenchmark,
                          ReferenceSpeedupBenchmark, TimingModeBenchmark)

# Every MoE benchmark's asv version moves on by one: before it, a zipf shape was timed at a near-uniform
# load (the timing seed's tokens against the check seed's router, each with its own load direction;
# variantbench/catalog/moe.py), so its history up to then measured another thing than its name says.
LOAD_FIX = 1


class MoEForward(ForwardBenchmark):
    family = "moe"
    version = str(1 + LOAD_FIX)


class MoEMetrics(MetricsBenchmark):
    family = "moe"
    version = str(2 + LOAD_FIX)


class MoEReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "moe"
    version = str(1 + LOAD_FIX)


class MoEPeakMemory(PeakMemoryBenchmark):
    family = "moe"
    version = str(1 + LOAD_FIX)


class MoEForwardPower(PowerBenchmark):
    family = "moe"
    version = str(1 + LOAD_FIX)


class MoETimingMode(TimingModeBenchmark):
    family = "moe"
    version = str(1 + LOAD_FIX)
