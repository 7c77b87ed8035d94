"""Block benchmarks: every supported (block recipe, implementation, shape) of the block family, where
a recipe is one transformer layer named after its model (variantbench/catalog/block.py). The classes
are the shared suite classes (suite/common.py); the baseline is the llama-3-8b block, fused."""

import statistics

from suite.common import (FamilyBenchmark, ForwardBackwardBenchmark, ForwardBenchmark, MetricsBenchmark,
                          PeakMemoryBenchmark, PowerBenchmark, ReferenceSpeedupBenchmark, TimingModeBenchmark,
                          once_per_process, once_per_run)
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


# A split call first messages the other ranks to start theirs (kernels/block/parallel.py). Timed one
# call at a time after a wait, rank 0 then also waits out that message at its first collective, which
# back-to-back calls (asv's time_forward; a model's layers) hide behind the call before: llama-3-8b's
# tensor-parallel split over 4 H200s read 0.55 efficient call by call (session 13) where the asv
# medians of session 12, back to back, gave 0.67 (12.745 / (4 x 4.769) ms). So each figure is a
# median over PARALLEL_ROUNDS of PARALLEL_CALLS calls back to back, the three calls taking turns in
# an order rotated every round, as asv's body runs them. Back to back on rank 0 only: each other rank
# still waits for its "run" message and synchronises after its call (kernels/block/parallel.py,
# Shard.run), so what remains of the gap is theirs. Unmeasured on a GPU (tools/finish_lanes.sh).
PARALLEL_ROUNDS = 7
PARALLEL_CALLS = 5


def parallel_figures(single, split, device) -> dict:
    """{"efficiency": the single-device block's median over (ranks x the split block's), "collectives_share":
    the split block's collectives alone over the split block, and each call's ms}."""
    samples = timing.interleaved_ms({"single": single, "split": split, "collectives": split.collectives}, device,
                                    rounds=PARALLEL_ROUNDS, warmup=1, batch=PARALLEL_CALLS)
    ms = {name: statistics.median(values) for name, values in samples.items()}
    return {"efficiency": ms["single"] / (split.ranks * ms["split"]), "collectives_share": ms["collectives"] / ms["split"],
            **ms}


class BlockParallel(FamilyBenchmark):
    """A block split over every GPU (tensor or sequence parallel) against the same block fused on one:
    parallel efficiency, 1 where N GPUs take 1/N of the time, and the collectives' share of the split
    block's time (its collectives run alone on buffers of their sizes)."""

    family = "block"

    def setup(self, variant, implementation, shape):
        case = self.case((variant, implementation, shape))
        if not case.implementation.every_gpu:
            raise NotImplementedError("parallel efficiency is a split block's figure")

        def build():
            problem, split, _ = cases.prepare_checked(case)
            _, single, _ = cases.prepare_checked(cases.resolve("block", variant, "fused", shape, case.device))
            return parallel_figures(single, split, problem.device)

        self.figures = once_per_run(case.name + "/parallel", build)

    def track_parallel_efficiency(self, variant, implementation, shape):
        return self.figures["efficiency"]

    track_parallel_efficiency.unit = "single / (ranks x split)"

    def track_collectives_share(self, variant, implementation, shape):
        return self.figures["collectives_share"]

    track_collectives_share.unit = "collectives / split block"


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
