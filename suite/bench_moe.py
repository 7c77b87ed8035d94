"""MoE benchmarks: every supported (router variant, implementation, shape) of the catalog, where the
shape carries the model, the token count and the routing load (uniform or Zipf-skewed).

As in bench_attention: setup checks against the float64 reference on fresh inputs before timing, and
the forward's setup measures the track metrics beside the family baseline (softmax top-k through
grouped_mm) and memoises them for the track benchmarks.
"""

from suite.common import Benchmark, grid, once_per_process, resolve_or_skip
from variantbench import cases, timing

PARAMS, PARAM_NAMES = grid("moe")


def _metrics(case):
    return once_per_process(case.name + "/metrics", lambda: cases.metrics(case))


class MoEForward(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("moe", variant, implementation, shape)

        def build():
            problem, call, check = cases.prepare_checked(case)
            cases.metrics(case, prepared=(problem, call, check))
            return timing.batched(call, problem.x.device)

        self.body = once_per_process(case.name, build)

    def time_forward(self, variant, implementation, shape):
        self.body()


class MoEMetrics(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        self.metrics = _metrics(resolve_or_skip("moe", variant, implementation, shape))

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


class MoEReferenceSpeedup(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        self.metrics = _metrics(resolve_or_skip("moe", variant, implementation, shape))
        if self.metrics["speedup_over_reference"] is None:
            raise NotImplementedError("the reference does not run at this shape (see the catalog)")

    def track_speedup_over_reference(self, *params):
        return self.metrics["speedup_over_reference"]

    track_speedup_over_reference.unit = "x"


class MoEPeakMemory(Benchmark):
    params, param_names = PARAMS, PARAM_NAMES

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip("moe", variant, implementation, shape)
        if case.device != "cuda":
            raise NotImplementedError("peak memory is tracked on CUDA only")
        self.metrics = _metrics(case)

    def track_peak_memory(self, *params):
        return self.metrics["peak_memory_mib"]

    track_peak_memory.unit = "MiB over inputs"
