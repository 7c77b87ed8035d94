"""What every family's benchmark module shares: the grid for this device, skips, and the timer.

asv imports the suite in a forkserver that forks every benchmark, so nothing here may touch CUDA at
import time; cases are resolved (pure Python) in `setup`, and an impossible combination becomes an
asv skip (NotImplementedError) with the catalog's reason.
"""

import os
import timeit

from variantbench import cases
from variantbench.catalog import Unsupported, family
from variantbench.device import default_device
from variantbench.timing import cuda_sync_timer

DEVICE = default_device()
QUICK = os.environ.get("VARIANTBENCH_QUICK") == "1"
# Comma-separated shape names: one runner's shard of the grid (`variantbench run --shape`).
ONLY_SHAPES = [s for s in os.environ.get("VARIANTBENCH_SHAPES", "").split(",") if s]


def grid(family_name):
    """asv params and param_names of a family on this device: (variant, implementation, shape)."""
    fam = family(family_name)
    shapes = [
        s.name for s in fam.shapes
        if s.device == DEVICE and (s.quick or not QUICK) and (not ONLY_SHAPES or s.name in ONLY_SHAPES)
    ]
    params = ([v.name for v in fam.variants], [i.name for i in fam.implementations], shapes)
    return params, ["variant", "implementation", "shape"]


def resolve_or_skip(family_name, variant, implementation, shape):
    try:
        return cases.resolve(family_name, variant, implementation, shape, DEVICE)
    except Unsupported as why:
        raise NotImplementedError(str(why)) from None


class Benchmark:
    """Base of every suite class: one process per measurement, the device's timer, a long timeout
    (a first Flex compile at 16k takes about a minute)."""

    timer = staticmethod(cuda_sync_timer) if DEVICE == "cuda" else staticmethod(timeit.default_timer)
    processes = 1
    timeout = 600
    # 10 samples of at least 50 ms each: 1-2 ms kernels get 25+ calls per sample, so launch gaps and
    # the synchronize at each end of a sample weigh under 1%.
    repeat = (5, 10, 30.0)
    sample_time = 0.05
    warmup_time = 0.2
