"""Every figure the suite records, once: the benchmark-name ending that every family's suite module
shares (bench_<family>.<Family>Metrics.track_tflops ends in "Metrics.track_tflops"), the key of the
record it is computed into (variantbench.metrics, or a memo of the timed process), the label a table
shows, its unit and the scale from what asv stores to what a table shows.

suite/common.py takes its units from here; `run`'s table (results.forward_tables), the report's
tables (summary), the budget and the gate pick their figures by these endings.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    ending: str
    key: str
    label: str
    unit: str
    scale: float = 1.0

    def of(self, benchmark: str) -> bool:
        return benchmark.endswith(self.ending)


FORWARD_MS = Figure("Forward.time_forward", "ms", "ms", "seconds per call (asv); tables show ms", 1e3)
TFLOPS = Figure("Metrics.track_tflops", "tflops", "TFLOP/s", "TFLOP/s")
GBPS = Figure("Metrics.track_gbps", "gbps", "GB/s", "GB/s")
PERCENT_OF_PEAK = Figure("Metrics.track_percent_of_peak", "percent_of_peak", "% roofline", "% of roofline")
RATIO = Figure("Metrics.track_ratio_to_baseline", "ratio_to_baseline", "x baseline", "x baseline cost per useful work")
RATIO_NOISE = Figure("Metrics.track_ratio_noise", "ratio_noise", "ratio noise", "relative IQR")
RATIO_STANDARD_ERROR = Figure("Metrics.track_ratio_standard_error", "ratio_standard_error", "± se",
                              "standard error of ln ratio_to_baseline")
TIME_RATIO = Figure("Metrics.track_time_ratio", "time_ratio", "time ratio", "x baseline wall time")
RATIO_CLOCK = Figure("Metrics.track_sm_clock_mhz", "sm_clock_mhz", "ratio MHz",
                     "MHz, mean SM clock while the ratio's blocks ran")
BASELINE_CLOCK = Figure("Metrics.track_baseline_sm_clock_mhz", "baseline_sm_clock_mhz", "baseline MHz",
                        "MHz, mean SM clock while the baseline's blocks ran")
MAX_ERROR = Figure("Metrics.track_max_error", "max_error", "max error", "max abs error vs float64")
SPEEDUP = Figure("ReferenceSpeedup.track_speedup_over_reference", "speedup_over_reference", "x reference", "x")
PEAK_MEMORY = Figure("PeakMemory.track_peak_memory", "peak_memory_mib", "peak MiB", "MiB over inputs")
# The power state over a timed benchmark's samples: <Family>ForwardPower for the forward,
# AttentionForwardBackwardPower for forward+backward (suite/common.py PowerBenchmark).
CLOCK = Figure("ForwardPower.track_sm_clock_mhz", "sm_clock_mhz", "MHz", "MHz, mean over the timed samples")
POWER = Figure("ForwardPower.track_power_w", "power_w", "W", "W, mean over the timed samples")
THROTTLE = Figure("ForwardPower.track_throttle_reasons", "throttle", "throttle", "NVML clock-event reason bits, OR-ed")
CUDA_GRAPH = Figure("TimingMode.track_cuda_graph", "cuda_graph", "graph", "1: timed as CUDA-graph replays, 0: as eager calls")
L2_INPUTS = Figure("TimingMode.track_l2_inputs", "input_sets", "input sets",
                   "input sets the calls cycle through, against the L2 (1: not rotated)")

# `variantbench run`'s closing table, and the report's table of every implementation (the budget
# verdict follows RATIO there).
RUN_TABLE = (FORWARD_MS, TFLOPS, GBPS, PERCENT_OF_PEAK, RATIO, SPEEDUP, CLOCK)
REPORT_TABLE = (FORWARD_MS, TFLOPS, GBPS, PERCENT_OF_PEAK, RATIO, TIME_RATIO, SPEEDUP, CLOCK, MAX_ERROR, PEAK_MEMORY)


def power_benchmark(timed: str, figure: Figure = CLOCK) -> str:
    """The power track recorded over a timed benchmark's samples:
    bench_moe.MoEForward.time_forward -> bench_moe.MoEForwardPower.track_sm_clock_mhz,
    bench_attention.AttentionForwardBackward.time_forward_backward -> ...AttentionForwardBackwardPower...."""
    module, timed_class, _ = timed.split(".")
    return f"{module}.{timed_class}Power.{figure.ending.split('.', 1)[1]}"
