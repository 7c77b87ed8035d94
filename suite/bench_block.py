"""Block benchmarks: every supported (block recipe, implementation, shape) of the block family, where
a recipe is one transformer layer named after its model (variantbench/catalog/block.py). The classes
are the shared suite classes (suite/common.py); the baseline is the llama-3-8b block, fused."""

import statistics

from suite.common import (FamilyBenchmark, ForwardBackwardBenchmark, ForwardBenchmark, MetricsBenchmark,
                          PeakMemoryBenchmark, PowerBenchmark, ReferenceSpeedupBenchmark, TimingModeBenchmark,
                          once_per_process)
from variantbench import cases, timing

# Rounds of every call (the block and each piece), interleaved in a rotated order (timing.interleaved_ms).
COMPOSITION_ROUNDS = 25


def composition(call, device) -> dict:
    """{"overhead": the block's median over the sum of its pieces' medians, piece: ms, ...}: above 1,
    what composing the pieces costs (launches, the residual adds, layouts), where fusing across
    pieces would pay."""
    samples = timing.interleaved_ms({"block": call, **call.pieces}, device, rounds=COMPOSITION_ROUNDS)
    ms = {name: statistics.median(values) for name, values in samples.items()}
    return {"overhead": ms["block"] / sum(v for name, v in ms.items() if name != "block"), **ms}


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


class BlockComposition(FamilyBenchmark):
    """The composition overhead of a fused block (see `composition`): its pieces are the catalog
    implementations `fused` chose, each timed alone on the inputs it sees in the block."""

    family = "block"

    def setup(self, variant, implementation, shape):
        case = self.case((variant, implementation, shape))

        def build():
            problem, call, _ = cases.prepare_checked(case)
            if not hasattr(call, "pieces"):
                raise NotImplementedError(f"{implementation} is not composed of catalog pieces")
            return composition(call, problem.device)

        self.figures = once_per_process(case.name + "/composition", build)

    def track_composition_overhead(self, variant, implementation, shape):
        return self.figures["overhead"]

    track_composition_overhead.unit = "x sum of pieces"
