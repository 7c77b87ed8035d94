"""What every family's benchmark module shares: the grid for this device, skips, and the timer.

asv imports the suite in a forkserver that forks every benchmark, so nothing here may touch CUDA at
import time; cases are resolved (pure Python) in `setup`, and an impossible combination becomes an
asv skip (NotImplementedError) with the catalog's reason.
"""

import abc
import dataclasses
import json
import os
import time

from variantbench import cases, figures, metrics, power, replay, timing
from variantbench.catalog import Unsupported, family
from variantbench.device import default_device
from variantbench.progress import progress, stall_dumps
from variantbench.shapes import in_tier
from variantbench.timing import cpu_timer, cuda_sync_timer

DEVICE = default_device()
TIER = os.environ.get("VARIANTBENCH_TIER", "default")


def _names(variable):
    """Comma-separated names from the environment: one runner's shard (`variantbench run --shape`)."""
    return [name for name in os.environ.get(variable, "").split(",") if name]


ONLY_SHAPES = _names("VARIANTBENCH_SHAPES")
ONLY_VARIANTS = _names("VARIANTBENCH_VARIANTS")
ONLY_IMPLEMENTATIONS = _names("VARIANTBENCH_IMPLEMENTATIONS")


def grid(family_name):
    """asv params and param_names of a family on this device: (variant, implementation, shape). The
    family comes with the plug-ins of the command that started asv (VARIANTBENCH_PLUGINS, read by
    `catalog.families()`), their entries under their recorded names (variantbench.plugins)."""
    fam = family(family_name)
    shapes = [
        s.name for s in fam.shapes
        if s.device == DEVICE and in_tier(s, TIER) and (not ONLY_SHAPES or s.name in ONLY_SHAPES)
    ]
    variants = [v.name for v in fam.variants
                if v.name in ONLY_VARIANTS or (not ONLY_VARIANTS and in_tier(v, TIER))]
    # Only fused implementations: every setup skips the reference (see resolve_or_skip), and asv starts
    # a process for every point of the grid, skipped or not: 11 of the attention grid's 44 points were
    # the reference, in each of its 16 benchmarks.
    implementations = [i.name for i in fam.implementations if i.fused and (
        i.name in ONLY_IMPLEMENTATIONS or (not ONLY_IMPLEMENTATIONS and in_tier(i, TIER)))]
    _preload()
    params = (variants, implementations, shapes)
    return params, ["variant", "implementation", "shape"]


def _preload():
    """Imports torch and triton here, in asv's forkserver, which imports the suite once and forks every
    benchmark from it: without this each fork imported them itself (1.2-1.4 s a process), and ec6ebbf's
    default tier on an H200 spent ~140 s of its 644 s on 71 track benchmarks that only read memos.
    Neither import touches CUDA. Our kernel modules are not preloaded: triton 3.2-3.6's autotune
    decorator starts its CUDA driver when the module is imported (Autotuner.__init__ asks
    driver.active for a benchmarker, and the driver asks torch.cuda.is_available()), and CUDA started
    before a fork is broken in every child."""
    import torch  # noqa: F401  (the import is the point)

    try:
        import triton  # noqa: F401
    except ImportError:  # a CPU machine without it: our kernels' setups say so, case by case
        pass


def resolve_or_skip(family_name, variant, implementation, shape):
    try:
        case = cases.resolve(family_name, variant, implementation, shape, DEVICE)
    except Unsupported as why:
        raise NotImplementedError(str(why)) from None
    if not case.implementation.fused:
        # The reference is the oracle every setup checks against and the floor every fused case is
        # timed against (its speedup_over_reference). Timing it on its own as well cost ~4 s of setup
        # per case for no figure the speedups do not already give.
        raise NotImplementedError("the reference is measured inside each fused case (speedup over reference)")
    return case


_prepared = {}


def once_per_process(key, build):
    """asv_runner re-runs setup before every sample (asv#966). Our timed calls never mutate their
    inputs, so a process builds (compiles, checks) a case once and later setups reuse it.
    Each build is logged to the run's progress file, which `variantbench run` prints as it grows:
    asv itself reports a benchmark only once its whole grid is done; a build that stalls writes its
    stack there (variantbench.progress)."""
    if key not in _prepared:
        t0 = time.perf_counter()
        with stall_dumps():
            _prepared[key] = build()
        elapsed = time.perf_counter() - t0
        if elapsed > 0.05:  # a memo read (the track benchmarks after the first) is not news
            progress(f"{key} ready in {elapsed:.1f}s")
    return _prepared[key]


def once_per_run(key, build):
    """`build()`'s figures (a JSON-able dict) once a run: the first process to build them records them
    in the run's memo (metrics.memo_path) and the run's later processes read them there. asv runs each
    track benchmark in a process of its own, so two tracks of one build (BlockParallel's efficiency and
    collectives share) each built it: a split block and its single-GPU block, ~45 s a case on 4 H200s,
    and 57a9be4's run of eight split blocks ran out of its 400 s before either track."""
    memo = metrics.memo_path(key)

    def read_or_build():
        if memo is not None and memo.exists():
            return json.loads(memo.read_text())
        figures = build()
        if memo is not None:
            metrics.write_memo(memo, figures)
        return figures

    return once_per_process(key, read_or_build)


class Benchmark:
    """Base of every suite class: one process per measurement, the device's timer, a long timeout
    (a first Flex compile at 16k takes about a minute)."""

    timer = staticmethod(cuda_sync_timer) if DEVICE == "cuda" else staticmethod(cpu_timer)
    # asv publishes only results whose benchmark version matches the suite's; by default that is a
    # hash of the source, so any edit of this file hid all earlier history from asv's graphs. Bump
    # it when what a benchmark measures changes, never for a refactor.
    version = "1"
    processes = 1
    timeout = 600
    # 10 samples, each a batch of calls of at least variantbench.timing.SAMPLE_MS (100 ms on a GPU: the
    # samples span a second, the period of the power controller's swing below).
    repeat = (5, 10, 30.0)
    number = 1
    # On the H200 (700 W cap) sustained load draws the power NVML averages up over ~0.8 s; then the
    # controller cuts the clock hard (DeepSeek-V3's MoE prefill 10.9 -> 12.8-13.0 ms a call for 0.1-0.2
    # s, SDPA's gqa_8 1.05 -> 1.18), and from ~1.0 s it swings about +-4% with a ~1 s period
    # (tools/probe_clock_drift.py, session 19). With 0.5 s of warm-up the samples straddled that cut:
    # the MoE gates' prefill samples ran 10.1-10.5 ms, then 11.3-12.7 (se 5%). Samples start after it.
    warmup_time = 1.2 if DEVICE == "cuda" else 0.1


class FamilyBenchmark(Benchmark, abc.ABC):
    """A benchmark over one family's grid. Subclasses in suite/bench_<family>.py name the family and
    get its grid as their params. Abstract here, so asv (which imports this module too) discovers
    only those subclasses, under their own names."""

    @property
    @abc.abstractmethod
    def family(self) -> str:
        """The family's name, a class attribute of each subclass."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("family"), str):
            cls.params, cls.param_names = grid(cls.family)

    def case(self, params):
        return resolve_or_skip(self.family, *params)


class PowerRecorded:
    """A timed benchmark whose process records the GPU's power state over its samples: NVML is read
    on a thread while asv times, and each teardown (asv runs one after every sample) leaves the mean
    SM clock, power and throttle reasons over the samples so far (the timer's marks bound them) in the
    run's memo, where the `track_` benchmarks of `PowerBenchmark` read it."""

    timed = "forward"  # the memo's name: which timed benchmark of the case the readings belong to

    def record_power(self, case):
        if case.device != "cuda" or metrics.memo_path(case) is None:
            return
        self._power_case = case
        sampler = once_per_process("power-sampler", lambda: power.Sampler(_cuda_device()).__enter__())
        self._sampler = sampler

    def teardown(self, *params):
        sampler = getattr(self, "_sampler", None)
        if sampler is None or sampler.unavailable:
            return
        state = sampler.windows(timing.sample_spans())
        if state is not None:
            metrics.write_memo(process_memo_path(self._power_case, "power", self.timed),
                               {figures.CLOCK.key: state.sm_clock_mhz, figures.POWER.key: state.power_w,
                                figures.THROTTLE.key: state.throttle_mask, "readings": state.readings})


def _cuda_device():
    import torch

    return torch.device("cuda", torch.cuda.current_device())


def process_memo_path(case, kind, timed):
    """Where a timed benchmark's process leaves a record of `kind` ("power", "timing") for the track
    benchmarks of the same run (beside the case's metrics memo), or None outside a run."""
    memo = metrics.memo_path(case)
    return None if memo is None else memo.with_name(memo.name.replace("metrics-", f"{kind}-{timed}-"))


class ForwardBenchmark(PowerRecorded, FamilyBenchmark):
    """The forward, timed by asv. Setup checks the case against the float64 reference on fresh inputs
    (a wrong kernel fails the benchmark with the mismatch, never becomes a figure), then measures the
    track metrics from the call about to be timed: one compile per case instead of two (see
    variantbench.metrics). The timed body runs the call as variantbench.replay builds it (CUDA-graph
    replays for a short call, rotated inputs for a small working set), and the run's memo says which
    for the `TimingModeBenchmark` tracks."""

    def setup(self, *params):
        case = self.case(params)

        def build():
            t0 = time.perf_counter()
            problem, call, check = metrics.prepare_remembered(case)
            t1 = time.perf_counter()
            metrics.metrics(case, prepared=(problem, call, check))
            t2 = time.perf_counter()
            timed, mode = replay.for_case(case, problem, call)
            t3 = time.perf_counter()
            if metrics.memo_path(case) is not None:
                metrics.write_memo(process_memo_path(case, "timing", self.timed), dataclasses.asdict(mode))
            backend = f" ({check['backend']})" if check["backend"] else ""  # the kernel or SDPA backend it picked
            # Where a default run's minutes go, case by case (the prepare includes the compile).
            progress(f"{case.name}{backend}: prepared and checked in {t1 - t0:.1f}s, metrics in {t2 - t1:.1f}s, "
                     f"timed body in {t3 - t2:.1f}s: {mode.why}")
            return timing.batched(timed, problem.device)

        self.body = once_per_process(case.name, build)
        self.record_power(case)

    def time_forward(self, *params):
        self.body()


def metrics_of(case):
    return once_per_process(case.name + "/metrics", lambda: metrics.metrics(case))


class ForwardBackwardBenchmark(PowerRecorded, FamilyBenchmark):
    """Forward and backward with a fixed random output gradient, the gradients checked against the
    float64 reference in setup, as the forward's outputs are."""

    timed = "forward_backward"

    def setup(self, variant, implementation, shape):
        case = resolve_or_skip(self.family, variant, implementation, shape)
        reason = cases.backward_unsupported(case)
        if reason:
            raise NotImplementedError(reason)

        def build():
            problem, call, _ = cases.prepare_checked(case, requires_grad=True)
            # Eager calls on one input set, unlike the forward (variantbench.replay): only prefill has a
            # backward, and its least (mqa at llama-3-8b-s1k) moves 0.83 GB in about a millisecond a
            # call (0.48 TFLOP): 8x the 2 x 50 MiB of an H100's L2, 20x the 50 us under which a call is
            # replayed as a graph. Capturing autograd would be machinery no case of the grid runs.
            timed = cases.forward_backward(problem, call)
            if case.device == "cuda":  # the host's share of the call, in the run's log (timing.eager_share)
                words = timing.eager_share(*timing.issue_and_call_ms(timed, problem.device))
                progress(f"{case.name}/backward: {words}")
            return timing.batched(timed, problem.device)

        self.body = once_per_process(case.name + "/backward", build)
        self.record_power(case)

    def time_forward_backward(self, variant, implementation, shape):
        self.body()


class MetricsBenchmark(FamilyBenchmark):
    """Derived figures of the forward, from one side-by-side measurement with the baseline and the
    reference (variantbench.metrics), memoised by the forward benchmark's process. NaN (asv: no
    figure) where a value could not be measured, such as the power state on the CPU."""

    # 2: the ratio to baseline and its noise come from alternating settled blocks, not interleaved
    # 20 ms batches that ran both calls at their mix's clock (variantbench.timing): version-1 ratios
    # read 10-20% high for our light kernels and stay out of the new history.
    version = "2"

    def setup(self, *params):
        self.metrics = metrics_of(self.case(params))

    def track_tflops(self, *params):
        return self.metrics[figures.TFLOPS.key]

    track_tflops.unit = figures.TFLOPS.unit

    def track_gbps(self, *params):
        return self.metrics[figures.GBPS.key]

    track_gbps.unit = figures.GBPS.unit

    def track_percent_of_peak(self, *params):
        return self.metrics[figures.PERCENT_OF_PEAK.key]

    track_percent_of_peak.unit = figures.PERCENT_OF_PEAK.unit

    def track_ratio_to_baseline(self, *params):
        return self.metrics[figures.RATIO.key]

    track_ratio_to_baseline.unit = figures.RATIO.unit

    def track_ratio_noise(self, *params):
        return self.metrics[figures.RATIO_NOISE.key]

    track_ratio_noise.unit = figures.RATIO_NOISE.unit

    def track_ratio_standard_error(self, *params):
        return self.metrics[figures.RATIO_STANDARD_ERROR.key]

    track_ratio_standard_error.unit = figures.RATIO_STANDARD_ERROR.unit

    def track_time_ratio(self, *params):
        return self.metrics[figures.TIME_RATIO.key]

    track_time_ratio.unit = figures.TIME_RATIO.unit

    def track_sm_clock_mhz(self, *params):
        return self.metrics[figures.RATIO_CLOCK.key]

    track_sm_clock_mhz.unit = figures.RATIO_CLOCK.unit

    def track_baseline_sm_clock_mhz(self, *params):
        return self.metrics[figures.BASELINE_CLOCK.key]

    track_baseline_sm_clock_mhz.unit = figures.BASELINE_CLOCK.unit

    def track_max_error(self, *params):
        return self.metrics[figures.MAX_ERROR.key]

    track_max_error.unit = figures.MAX_ERROR.unit


class ReferenceSpeedupBenchmark(FamilyBenchmark):
    def setup(self, *params):
        self.metrics = metrics_of(self.case(params))
        if self.metrics[figures.SPEEDUP.key] is None:
            raise NotImplementedError("the reference does not run at this shape (see the catalog)")

    def track_speedup_over_reference(self, *params):
        return self.metrics[figures.SPEEDUP.key]

    track_speedup_over_reference.unit = figures.SPEEDUP.unit


class PeakMemoryBenchmark(FamilyBenchmark):
    def setup(self, *params):
        case = self.case(params)
        if case.device != "cuda":
            raise NotImplementedError("peak memory is tracked on CUDA only")
        self.metrics = metrics_of(case)

    def track_peak_memory(self, *params):
        return self.metrics[figures.PEAK_MEMORY.key]

    track_peak_memory.unit = figures.PEAK_MEMORY.unit


class ProcessRecordBenchmark(FamilyBenchmark):
    """Tracks of what a timed benchmark's process recorded about its own samples (`process_memo_path`
    of `kind` and `timed`), read into `self.record`; an asv skip saying `missing` where this run has
    no such record."""

    kind: str
    missing: str
    timed = "forward"

    def setup(self, *params):
        path = process_memo_path(self.case(params), self.kind, self.timed)
        if path is None or not path.exists():
            raise NotImplementedError(self.missing)
        self.record = json.loads(path.read_text())


class PowerBenchmark(ProcessRecordBenchmark):
    """The power state over a timed benchmark's samples (see `PowerRecorded`): mean SM clock, mean
    power, and NVML's throttle reason bits OR-ed over the samples (variantbench.power names them)."""

    kind = "power"
    missing = "no power readings for this case in this run (CPU, no NVML, or not timed)"

    def track_sm_clock_mhz(self, *params):
        return self.record[figures.CLOCK.key]

    track_sm_clock_mhz.unit = figures.CLOCK.unit

    def track_power_w(self, *params):
        return self.record[figures.POWER.key]

    track_power_w.unit = figures.POWER.unit

    def track_throttle_reasons(self, *params):
        return self.record[figures.THROTTLE.key]

    track_throttle_reasons.unit = figures.THROTTLE.unit


class TimingModeBenchmark(ProcessRecordBenchmark):
    """What the forward's figure is of (variantbench.replay): CUDA-graph replays or eager calls, over
    how many rotated input sets; the record's `why` says it in words, with the numbers."""

    kind = "timing"
    missing = "the forward was not timed in this run: no record of how"

    def track_cuda_graph(self, *params):
        return self.record[figures.CUDA_GRAPH.key]

    track_cuda_graph.unit = figures.CUDA_GRAPH.unit

    def track_l2_inputs(self, *params):
        return self.record[figures.L2_INPUTS.key]

    track_l2_inputs.unit = figures.L2_INPUTS.unit
