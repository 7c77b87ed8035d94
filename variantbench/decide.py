"""Deciding whether HEAD is slower than BASE, per benchmark, without teaching people to ignore it.

A flat "ratio over 1.10" fails most pull requests of a 300-benchmark suite on noise alone, and misses
half of the true 10% slowdowns (their measured ratio straddles 1.10). So a benchmark is a regression
candidate only when all of these hold:

1. significantly slower: the log ratio of medians over its standard error exceeds the one-sided normal
   quantile at family_alpha / n_benchmarks (Bonferroni), so the chance that *any* of n unchanged
   benchmarks trips stays under family_alpha;
2. not significantly under the factor: the ratio plus a margin of `power_z` standard errors reaches
   the factor (SCREEN_Z, CONFIRM_Z below);
3. resolvable: a benchmark whose noise could not show the factor significantly even if it were there
   (z_alpha * se > ln factor) is "noisy" and never gates; the summary says so.

The gate then re-runs only the candidates, on both commits, and `confirm`s each on the pooled samples.

Noise is estimated robustly on log times: 1.4826 x MAD (a normal's sigma), pooled over base and head,
or ln(q75/q25) / 1.349 where only asv's quartiles were recorded; the median of n samples has variance
about (pi/2) sigma^2 / n.
"""

import math
import statistics
from dataclasses import dataclass

FAMILY_ALPHA = 0.01  # chance that any unchanged benchmark of a suite is flagged slower
# Margins on the upper bound of the ratio, in standard errors. Between a 5% slowdown (must never fail)
# and one of exactly the 10% factor (must be caught) lie only ~4 standard errors at 2% noise and 10
# samples a side. So: screen wide (3.0), keeping nearly every true 10% as a suspect; then re-run the
# suspects on both commits with RERUN_SAMPLES each and confirm on the pooled 30 vs 30 at 2.5.
# Simulated 300-benchmark suites (tests/test_decide.py and two other seeds): unchanged 0/200 fail,
# 5% slowdowns 0/600, 10% caught 96-98%, 20% always.
SCREEN_Z = 3.0
CONFIRM_Z = 2.5
RERUN_SAMPLES = 20


@dataclass(frozen=True)
class Comparison:
    verdict: str  # slower, faster, same, noisy, new, gone, failed, skipped
    ratio: float | None  # head / base, medians
    standard_error: float | None  # of the log ratio
    z: float | None


def log_deviations(side):
    """Absolute deviations of log samples from their median, and the sample count; or, where only
    asv's quartiles were recorded, a sigma from them (returned as one pseudo-deviation)."""
    samples = side.get("samples")
    if samples and len(samples) >= 3:
        logs = [math.log(s) for s in samples]
        centre = statistics.median(logs)
        return [abs(x - centre) for x in logs], len(samples)
    q25, q75, repeat = side.get("q25"), side.get("q75"), side.get("repeat")
    if q25 and q75 and q25 > 0 and repeat:
        return [math.log(q75 / q25) / 1.349 / 1.4826], repeat
    return None, None


def z_alpha(n_benchmarks, family_alpha=FAMILY_ALPHA):
    return statistics.NormalDist().inv_cdf(1 - family_alpha / max(1, n_benchmarks))


def _valid(value):
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value > 0


def compare(base, head, n_benchmarks, factor=1.10, family_alpha=FAMILY_ALPHA, power_z=SCREEN_Z) -> Comparison:
    """base, head: dicts with value (median), and samples or q25/q75 with repeat; or None if absent."""
    if base is None and head is None:
        return Comparison("skipped", None, None, None)
    if base is None:
        return Comparison("new", None, None, None)
    if head is None:
        return Comparison("gone", None, None, None)
    base_ok, head_ok = _valid(base.get("value")), _valid(head.get("value"))
    if not base_ok and not head_ok:
        return Comparison("skipped", None, None, None)
    if not head_ok:
        return Comparison("failed", None, None, None)  # crashed or OOM on head, ran on base
    if not base_ok:
        return Comparison("new", None, None, None)
    ratio = head["value"] / base["value"]
    (base_dev, base_n), (head_dev, head_n) = log_deviations(base), log_deviations(head)
    if base_dev is None or head_dev is None:
        return Comparison("noisy", ratio, None, None)  # one sample: no noise estimate, cannot gate
    # One sigma pooled over both sides (each about its own median): from 10 + 10 samples a pooled MAD
    # varies half as much as two separate ones, which kept true 10% slowdowns from reading as noisy.
    sigma = 1.4826 * statistics.median(base_dev + head_dev)
    se = math.sqrt(math.pi / 2) * sigma * math.sqrt(1 / base_n + 1 / head_n)
    za = z_alpha(n_benchmarks, family_alpha)
    if se == 0:
        se = 1e-12
    if za * se > math.log(factor):
        return Comparison("noisy", ratio, se, math.log(ratio) / se)
    z = math.log(ratio) / se
    if z > za and math.log(ratio) + power_z * se >= math.log(factor):
        return Comparison("slower", ratio, se, z)
    if z < -za and -math.log(ratio) + power_z * se >= math.log(factor):
        return Comparison("faster", ratio, se, z)
    return Comparison("same", ratio, se, z)


def confirm(base, head, base_rerun, head_rerun, n_benchmarks, factor=1.10, family_alpha=FAMILY_ALPHA) -> Comparison:
    """Decide a suspect again on each commit's samples pooled with its re-run's (all carry samples)."""

    def pooled(first, again):
        samples = list(first["samples"]) + list(again["samples"])
        return {"value": statistics.median(samples), "samples": samples}

    return compare(pooled(base, base_rerun), pooled(head, head_rerun), n_benchmarks, factor, family_alpha,
                   power_z=CONFIRM_Z)
