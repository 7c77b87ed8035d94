"""The derived figures of a case: throughput, roofline share, cost against the family baseline, speedup
over the reference, error, peak memory and the power state they were measured in.

One `Side` per thing timed (the case, the baseline, the reference): its call, its work and its
samples. The case and the baseline are timed in alternating blocks (variantbench.timing explains why
not finely interleaved): their ratio gates the signal budget, so it must be what each costs run on
its own, and slow drift must hit both alike.
"""

import hashlib
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from variantbench import timing
from variantbench.cases import UnsupportedWhenPrepared, _torch_device, prepare_checked, resolve
from variantbench.catalog import Unsupported, family
from variantbench.power import Sampler

# The eager reference is timed apart, 5 rounds: at ~50 ms a call, blocks would add seconds per case,
# and a 13-70x speedup needs no drift cancelling. (H100: the fused calls after 28 reference calls
# time the same, 1.028 vs 1.039 ms; tools/timing_probe.py.)
REFERENCE_ROUNDS = 5


@dataclass
class Side:
    """One thing timed: its variant and problem (for the work model), its call, and what was measured."""

    variant: object
    problem: object
    call: object
    samples: list = field(default_factory=list)
    power: object = None  # variantbench.power.PowerState of its timed blocks, where NVML reads
    work: object = None  # its family's work model, where it is not the family of the side it is judged beside

    @property
    def ms(self) -> float:
        return statistics.median(self.samples)

    def floor_ms(self, work, peaks) -> float:
        """The roofline time of its work on this device's measured peaks (its own work model first)."""
        flops, nbytes = (self.work or work)(self.variant, self.problem)
        return max(flops / peaks["tflops"] / 1e9, nbytes / peaks["gbps"] / 1e6)


def memo_path(case, run_dir=None):
    """Where a run's processes share one case's metrics (`run_dir`, else VARIANTBENCH_RUN_DIR), or None
    outside a run. `case` is a Case or its name."""
    root = run_dir or os.environ.get("VARIANTBENCH_RUN_DIR")
    if not root:
        return None
    name = case if isinstance(case, str) else case.name
    key = hashlib.sha1(name.encode()).hexdigest()[:16]
    return Path(root) / f"metrics-{key}.json"


# A memo that says why the case's prepare failed (UnsupportedWhenPrepared), in place of its figures.
UNSUPPORTED = "unsupported"


def remember_unsupported(case, why, run_dir=None):
    """Record in the run's memo that `case` (a Case or its name) cannot be prepared here, so that its
    other benchmarks skip it at once. Without it each of them tried again: FlexAttention failed to
    compile MLA's absorbed decode in ~10 s in each of 12 track processes, 120 s of 86c9ee3's 670 s
    default tier on an H200."""
    memo = memo_path(case, run_dir)
    if memo is not None:
        write_memo(memo, {UNSUPPORTED: str(why)})


def _recorded(memo):
    """The run's record of a case (None where there is none yet); UnsupportedWhenPrepared where the
    record says its prepare found it cannot run."""
    if memo is None or not memo.exists():
        return None
    record = json.loads(memo.read_text())
    if UNSUPPORTED in record:
        raise UnsupportedWhenPrepared(record[UNSUPPORTED])
    return record


def prepare_remembered(case, **kwargs):
    """cases.prepare_checked, except that a case this run already found unpreparable (the precheck,
    or another benchmark's process) is skipped at once, and one found so now is remembered."""
    _recorded(memo_path(case))
    try:
        return prepare_checked(case, **kwargs)
    except UnsupportedWhenPrepared as why:
        remember_unsupported(case, why)
        raise


def write_memo(path: Path, record: dict):
    """Atomically: a reader in another process sees the whole record or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)


def _peak_memory_mib(call, dev):
    import torch

    if dev.type != "cuda":
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def _power_fields(prefix, state) -> dict:
    """sm_clock_mhz, power_w and throttle (NVML's reason bits) of a side; NaN where not read."""
    nan = float("nan")
    return {f"{prefix}sm_clock_mhz": state.sm_clock_mhz if state else nan,
            f"{prefix}power_w": state.power_w if state else nan,
            f"{prefix}throttle": state.throttle_mask if state else nan}


def timed_as_served(case, problem, call):
    """The call a side of a ratio times. A decode step on a GPU: the graph replays asv's timed body
    runs (variantbench.replay.for_case), as serving engines run decode; eagerly a step of several
    launches also pays the gaps between them (ours at paged b1 x kv128k: 0.1527 ms eager, 0.143
    replayed; H200, session 13), which would weigh in its ratio but in no served step. Any other call
    as it is."""
    if problem.device.type != "cuda" or not timing.decode_step(case.shape):
        return call
    from variantbench import replay

    return replay.for_case(case, problem, call)[0]


def measure_side_by_side(sides: dict, dev, plan=None):
    """Time every side's call in alternating blocks (variantbench.timing says why blocks), with the
    power state of each side's timed parts: fills each Side's `samples` and `power`. `metrics` times
    a case and its baseline this way; `variantbench try` a variant's fused implementations and A's."""
    with Sampler(dev) as sampler:
        blocks = timing.alternating_blocks({name: side.call for name, side in sides.items()}, dev, plan)
    for name, side in sides.items():
        side.samples = blocks.samples[name]
        side.power = sampler.windows(blocks.windows[name])


def time_apart(side: Side, dev):
    """The eager reference's samples, timed apart in REFERENCE_ROUNDS rounds (see there); its call is
    released afterwards: its B x H x S x S scores stay allocated otherwise."""
    side.samples = timing.interleaved_ms({"reference": side.call}, dev, rounds=REFERENCE_ROUNDS, warmup=1)["reference"]
    side.call = None


def against(mine: Side, base: Side, work, peaks) -> dict:
    """The figures of `mine` beside `base`, both measured at one shape in one run: time, throughput
    and roofline share on useful work, and the cost per useful work over base's, its noise and the
    standard error of its log, and the wall-time ratio."""
    flops, nbytes = work(mine.variant, mine.problem)
    floor, base_floor = mine.floor_ms(work, peaks), base.floor_ms(work, peaks)
    return {
        "ms": mine.ms,
        "noise": timing.spread(mine.samples),
        "tflops": flops / mine.ms / 1e9,
        "gbps": nbytes / mine.ms / 1e6,
        "percent_of_peak": 100 * floor / mine.ms,
        "bound": "compute" if flops / peaks["tflops"] / 1e9 >= nbytes / peaks["gbps"] / 1e6 else "memory",
        # cost per useful work: time over the roofline time of the work done
        "ratio_to_baseline": (mine.ms / floor) / (base.ms / base_floor),
        "ratio_noise": timing.spread(mine.samples) + timing.spread(base.samples),
        "ratio_standard_error": timing.log_ratio_standard_error(mine.samples, base.samples),
        "time_ratio": mine.ms / base.ms,
        "baseline_ms": base.ms,
    }


# The figures that only a baseline gives: NaN (asv: no figure) where the baseline cannot run.
BASELINE_KEYS = ("ratio_to_baseline", "ratio_noise", "ratio_standard_error", "time_ratio", "baseline_ms")


def metrics(case, prepared=None, plan=None) -> dict:
    """Every track figure of a case, from one alternating-block measurement of the case and the
    family baseline at the same shape, and the reference where it runs.

    `prepared` is the case's (problem, call, check) where the caller has it: the forward benchmark's
    process computes the metrics from the call it then times, so a case compiles once for both (a
    FlexAttention compile takes ~11 s on an H100 host even with warm caches). asv runs every track
    method in its own process; they read the memo in VARIANTBENCH_RUN_DIR, and compute it themselves
    only where the forward did not run (a --bench shard)."""
    memo = memo_path(case)
    record = _recorded(memo)
    if record is not None:
        return record
    from variantbench.device import measured_peaks

    dev = _torch_device(case)
    peaks = measured_peaks(case.device)
    fam = family(case.family)
    problem, call, check = prepared or prepare_remembered(case)
    sides = {"case": Side(case.variant, problem, timed_as_served(case, problem, call))}
    base_variant, base_impl = fam.baseline
    no_baseline = None
    if (base_variant, base_impl) != (case.variant, case.implementation):
        try:
            base_case = resolve(fam.name, base_variant.name, base_impl.name, case.shape.name, case.device)
        except Unsupported as why:  # a peer baseline not installed here (fla-core): no ratio, the rest stands
            no_baseline = str(why)
        else:
            base_problem, base_call, _ = prepare_checked(base_case)
            sides["baseline"] = Side(base_variant, base_problem, timed_as_served(base_case, base_problem, base_call))
    peak_memory_mib = _peak_memory_mib(call, dev)
    measure_side_by_side(sides, dev, plan)

    reference = None
    ref_impl = fam.implementation("reference")
    if case.implementation is not ref_impl and not ref_impl.unsupported(case.variant, case.shape):
        ref_case = resolve(fam.name, case.variant.name, ref_impl.name, case.shape.name, case.device)
        ref_call = ref_impl.load().prepare(case.variant, problem)
        # timed as the case is (a decode step as graph replays), so the speedup compares like with like
        reference = Side(case.variant, problem, timed_as_served(ref_case, problem, ref_call))
        time_apart(reference, dev)

    mine, base = sides["case"], sides.get("baseline", sides["case"])
    figures_against = against(mine, base, fam.work, peaks)
    if no_baseline:
        figures_against.update({key: math.nan for key in BASELINE_KEYS})
    result = {
        "case": case.name,
        **figures_against,
        "no_baseline": no_baseline,
        "speedup_over_reference": reference.ms / mine.ms if reference else None,
        "reference_ms": reference.ms if reference else None,
        "max_error": check["max_error"],
        "tolerance": check["tolerance"],
        "peak_memory_mib": peak_memory_mib,
        "sdpa_backend": check["backend"],
        "peak_tflops": peaks["tflops"],
        "peak_gbps": peaks["gbps"],
        **_power_fields("", mine.power),
        **_power_fields("baseline_", base.power),
    }
    if memo is not None:
        write_memo(memo, result)
    return result
