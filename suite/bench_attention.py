"""Attention benchmarks: every supported (variant, implementation, shape) of the catalog.

Each setup checks the implementation against the float64 reference on fresh inputs before timing;
a wrong kernel fails the benchmark with the mismatch, it never becomes a figure. The forward's setup
also measures the track metrics (ratio to baseline side by side, reference speedup, peak memory) and
memoises them for the track benchmarks' processes.
"""

from suite.common import Benchmark, grid, once_per_process, progress, resolve_or_skip
from variantbench import cases, timing

PARAMS, PARAM_NAMES = grid("attention")


def _metrics(case):
    return once_per_process(case.name + "/metrics", lambda: cases.metrics(case))


class AttentionForward(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("attention", variant, implementation, shape)

        def build():
            problem, call, check = cases.prepare_checked(case)
            if check["backend"]:
                progress(f"{case.name} runs on SDPA backend {check['backend']}")
            # The track benchmarks' figures, measured here from the call about to be timed: one
            # compile per case instead of two (see cases.metrics).
            cases.metrics(case, prepared=(problem, call, check))
            return timing.batched(call, problem.q.device)

        self.body = once_per_process(case.name, build)

    def time_forward(self, variant, implementation, shape):
        self.body()


class AttentionForwardBackward(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("attention", variant, implementation, shape)
        if not case.implementation.backward:
            raise NotImplementedError(f"{implementation} is forward-only")
        if case.shape.phase == "decode":
            raise NotImplementedError("decode is inference: no backward")

        def build():
            problem, call, _ = cases.prepare_checked(case, requires_grad=True)
            return timing.batched(cases.forward_backward(problem, call), problem.q.device)

        self.body = once_per_process(case.name + "/backward", build)

    def time_forward_backward(self, variant, implementation, shape):
        self.body()


class AttentionMetrics(Benchmark):
    """Derived figures of the forward, from one side-by-side measurement with the baseline and the
    reference (see variantbench.cases.metrics)."""

    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("attention", variant, implementation, shape)
        self.metrics = _metrics(case)

    def track_tflops(self, *params):
        return self.metrics["tflops"]

    track_tflops.unit = "TFLOP/s"

    def track_gbps(self, *params):
        return self.metrics["gbps"]

    track_gbps.unit = "GB/s"

    def track_percent_of_peak(self, *params):
        return self.metrics["percent_of_peak"]

    track_percent_of_peak.unit = "% of roofline"

    def track_ratio_to_baseline(self, *params):
        return self.metrics["ratio_to_baseline"]

    track_ratio_to_baseline.unit = "x baseline cost per useful work"

    def track_ratio_noise(self, *params):
        return self.metrics["ratio_noise"]

    track_ratio_noise.unit = "relative IQR"

    def track_max_error(self, *params):
        return self.metrics["max_error"]

    track_max_error.unit = "max abs error vs float64"


class AttentionReferenceSpeedup(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("attention", variant, implementation, shape)
        if implementation == "reference":
            raise NotImplementedError("the reference itself")
        self.metrics = _metrics(case)
        if self.metrics["speedup_over_reference"] is None:
            raise NotImplementedError("the reference does not run at this shape (see the catalog)")

    def track_speedup_over_reference(self, *params):
        return self.metrics["speedup_over_reference"]

    track_speedup_over_reference.unit = "x"


class AttentionPeakMemory(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("attention", variant, implementation, shape)
        if case.device != "cuda":
            raise NotImplementedError("peak memory is tracked on CUDA only")
        self.metrics = _metrics(case)

    def track_peak_memory(self, *params):
        return self.metrics["peak_memory_mib"]

    track_peak_memory.unit = "MiB over inputs"
