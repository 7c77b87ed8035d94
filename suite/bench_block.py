"""Block benchmarks: every supported (block recipe, implementation, shape) of the block family, where
a recipe is one transformer layer named after its model (variantbench/catalog/block.py). The classes
are the shared suite classes (suite/common.py); the baseline is the llama-3-8b block, fused."""

from suite.common import (ForwardBackwardBenchmark, ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark,
                          PowerBenchmark, ReferenceSpeedupBenchmark, TimingModeBenchmark)


class BlockForward(ForwardBenchmark):
    family = "block"


class BlockForwardBackward(ForwardBackwardBenchmark):
    family = "block"


class BlockMetrics(MetricsBenchmark):
    family = "block"


class BlockReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "block"


class BlockPeakMemory(PeakMemoryBenchmark):
    family = "block"


class BlockTimingMode(TimingModeBenchmark):
    family = "block"


class BlockForwardPower(PowerBenchmark):
    family = "block"


class BlockForwardBackwardPower(PowerBenchmark):
    family = "block"
    timed = "forward_backward"
