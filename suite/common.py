"""What every family's benchmark module shares: the grid for this device, skips, and the timer.

asv imports the suite in a forkserver that forks every benchmark, so nothing here may touch CUDA at
import time; cases are resolved (pure Python) in `setup`, and an impossible combination becomes an
asv skip (NotImplementedError) with the catalog's reason.
"""

import os
import time

from variantbench import cases
from variantbench.catalog import Unsupported, family
from variantbench.device import default_device
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
    """asv params and param_names of a family on this device: (variant, implementation, shape)."""
    fam = family(family_name)
    shapes = [
        s.name for s in fam.shapes
        if s.device == DEVICE and in_tier(s, TIER) and (not ONLY_SHAPES or s.name in ONLY_SHAPES)
    ]
    variants = [v.name for v in fam.variants if not ONLY_VARIANTS or v.name in ONLY_VARIANTS]
    implementations = [i.name for i in fam.implementations if not ONLY_IMPLEMENTATIONS or i.name in ONLY_IMPLEMENTATIONS]
    params = (variants, implementations, shapes)
    return params, ["variant", "implementation", "shape"]


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
    asv itself reports a benchmark only once its whole grid is done."""
    if key not in _prepared:
        t0 = time.perf_counter()
        _prepared[key] = build()
        elapsed = time.perf_counter() - t0
        if elapsed > 0.05:  # a memo read (the track benchmarks after the first) is not news
            progress(f"{key} ready in {elapsed:.1f}s")
    return _prepared[key]


def progress(line):
    run_dir = os.environ.get("VARIANTBENCH_RUN_DIR")
    if run_dir:
        # One short append per line: atomic on POSIX, so lines from successive processes never mix.
        with open(os.path.join(run_dir, "progress.log"), "a") as log:
            log.write(line + "\n")


class Benchmark:
    """Base of every suite class: one process per measurement, the device's timer, a long timeout
    (a first Flex compile at 16k takes about a minute)."""

    timer = staticmethod(cuda_sync_timer) if DEVICE == "cuda" else staticmethod(cpu_timer)
    processes = 1
    timeout = 600
    # 10 samples, each a batch of calls of at least variantbench.timing.SAMPLE_MS.
    repeat = (5, 10, 30.0)
    number = 1
    warmup_time = 0.1
