"""MLA benchmarks: every supported (variant, implementation, shape) of multi-head latent attention,
where the shape carries the model, the phase (prefill, decompressed; decode, absorbed over the latent
cache) and the batch. The classes are the shared suite classes (suite/common.py); the baseline is
DeepSeek-V3's MLA through SDPA."""

from suite.common import (ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark, PowerBenchmark,
                          ReferenceSpeedupBenchmark, TimingModeBenchmark)


class MLAForward(ForwardBenchmark):
    family = "mla"


class MLAMetrics(MetricsBenchmark):
    family = "mla"


class MLAReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "mla"


class MLAPeakMemory(PeakMemoryBenchmark):
    family = "mla"


class MLAForwardPower(PowerBenchmark):
    family = "mla"


class MLATimingMode(TimingModeBenchmark):
    family = "mla"
