"""Paged-KV decode benchmarks: every supported (variant, implementation, shape) of the paged family,
where the shape carries the model, the batch, the cache length, the page size and equal or mixed
lengths. The classes are the shared suite classes (suite/common.py); the baseline is decode through
SDPA over a contiguous copy of the cache."""

from suite.common import (ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark, PowerBenchmark,
                          ReferenceSpeedupBenchmark, TimingModeBenchmark)


class PagedForward(ForwardBenchmark):
    family = "paged"


class PagedMetrics(MetricsBenchmark):
    family = "paged"


class PagedReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "paged"


class PagedPeakMemory(PeakMemoryBenchmark):
    family = "paged"


class PagedForwardPower(PowerBenchmark):
    family = "paged"


class PagedTimingMode(TimingModeBenchmark):
    family = "paged"
