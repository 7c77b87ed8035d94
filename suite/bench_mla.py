"""MLA benchmarks: every supported (variant, implementation, shape) of multi-head latent attention,
where the shape carries the model, the phase (prefill, decompressed; decode, absorbed over the latent
cache) and the batch. The classes are the shared suite classes (suite/common.py); the baseline is
DeepSeek-V3's MLA through SDPA.

Forward+backward runs prefill alone (decode is inference), and MLA's prefill shapes are in the full
tier: the default tier's MLA shape is decode, where each forward+backward point skips in its setup.
"""

from suite.common import (ForwardBackwardBenchmark, ForwardBenchmark, MetricsBenchmark, PeakMemoryBenchmark,
                          PowerBenchmark, ReferenceSpeedupBenchmark, TimingModeBenchmark)


class MLAForward(ForwardBenchmark):
    family = "mla"


class MLAForwardBackward(ForwardBackwardBenchmark):
    family = "mla"


class MLAMetrics(MetricsBenchmark):
    family = "mla"


class MLAReferenceSpeedup(ReferenceSpeedupBenchmark):
    family = "mla"


class MLAPeakMemory(PeakMemoryBenchmark):
    family = "mla"


class MLAForwardPower(PowerBenchmark):
    family = "mla"


class MLAForwardBackwardPower(PowerBenchmark):
    family = "mla"
    timed = "forward_backward"


class MLATimingMode(TimingModeBenchmark):
    family = "mla"
