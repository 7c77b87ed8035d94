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

The gate then re-runs only the candidates, on both commits, and `confirm`s each on both runs.

Within-run noise is estimated robustly on log times: 1.4826 x MAD (a normal's sigma), pooled over the
runs compared, or ln(q75/q25) / 1.349 where only asv's quartiles were recorded; the median of n samples
has variance about (pi/2) sigma^2 / n.

Between-run noise (`between_run_sigma`, calibrated from A/A pairs of the history by
variantbench.noise). The samples of one run share that run's clock/power state, temperature and
process placement, so a run's log median is  mu_commit + o_run + e,  with a run offset
o_run ~ N(0, sigma_b^2) common to all its samples and e of variance (pi/2) sigma^2 / n. On the H100 a
ratio moved ~5% between two runs of identical code while asv's samples spread 0.1-0.5%: the samples
alone say nothing about o_run. Hence:

- one run per commit (`compare`): the log ratio carries two offsets, o_head - o_base, so
  se^2 = (pi/2) sigma^2 (1/n_base + 1/n_head) + 2 sigma_b^2;
- two runs per commit (`confirm`): each side is the inverse-variance mean of its runs' log medians,
  weights 1 / (sigma_b^2 + (pi/2) sigma^2 / n_run), of variance 1 / sum(weights): the between-run part
  per side about halves (0.51 sigma_b^2 at sigma_b = 1%, 0.5% noise, 10 + 20 samples). The median of
  the pooled samples would not halve it: it follows the 20-sample re-run (0.75 sigma_b^2, simulated);
- an A/A pair (identical timed code) has log ratio d with E[d^2] = 2 sigma_b^2 + within^2, which is
  how variantbench.noise estimates sigma_b.

With sigma_b = 1% (0.5% within, 10 samples, 300 benchmarks, z_alpha 4.50) one run per commit has
se 1.44%, and z_alpha * se = 6.5% > ln 1.05 = 4.88%: no single-run decision can resolve a 1.05
factor. Two runs have se 1.02% (4.57% < 4.88%). So where a confirming re-run follows (the gate's first pass), `compare`
runs as a screen (`screen=True`): "slower" means "suspect" at SUSPECT_Z rather than z_alpha, and
"noisy" is judged on the se the confirmation will have. A false suspect costs a re-run, never a false
alarm: the confirmation alone still holds the family-wise alpha. Without a re-run (`variantbench
compare`, `gate --no-run`, the history's steps, bisect) `compare` stays the strict single-run rule.

Simulated at factor 1.05 (tests/test_decide.py: 300 benchmarks, sigma_b = 1%, 0.5% within-run noise,
10 samples; each benchmark calibrated from 6 A/A pairs, each calibration deciding 10 gates; seeds 1-3,
1000 gates each): unchanged suites fail 3 of 3000 gates (0.1%: REGRESSION_ALPHA); one benchmark 6%
slower is caught, and named alone, in 87.8% of gates, one exactly at the factor in 61.6%; the screen
re-runs 6.8 false suspects per unchanged gate. The rule before the between-run term, on the same
suites: 2 of 3000 unchanged fail (its re-run happened to clear 1% offsets), 6% caught in 79.6%, 5% in
49.0%, and its single-run decision flags an unchanged benchmark in 48.5% of suites (485/1000). Where
a tenth of the benchmarks moves 3% between runs, it fails 61% of unchanged gates (368/600); calibrated,
none (variantbench.noise: the noisy tenth inflates its benchmark's pool, and 1.05 reads "noisy").
"""

import math
import statistics
from dataclasses import dataclass

FAMILY_ALPHA = 0.01  # z_alpha's default: chance that any of n unchanged cases reads significant (budget.py)
# The regression decision's: chance that an unchanged suite fails the gate. Not FAMILY_ALPHA: at factor
# 1.05 with 1% between-run noise a gate at 0.01 failed 9 of 1000 unchanged suites (its design rate),
# at 0.001 3 of 3000, catching one benchmark 6% slower in 88% of gates instead of 93% (simulated as in
# tests/test_decide.py). At 1.10 it changes nothing measurable: a 10% slowdown is 15 standard errors
# there, and the factor margin, not the significance, decides (880/900 caught at either alpha).
REGRESSION_ALPHA = 0.001
# Margins on the upper bound of the ratio, in standard errors. Between a 5% slowdown (must never fail)
# and one of exactly the 10% factor (must be caught) lie only ~4 standard errors at 2% noise and 10
# samples a side. So: screen wide (3.0), keeping nearly every true 10% as a suspect; then re-run the
# suspects on both commits with RERUN_SAMPLES each and confirm on both runs at 2.5.
# Simulated 300-benchmark suites through the screen (tests/test_decide.py's gate_fails, seeds 1-3):
# unchanged 0/1500 fail, 5% slowdowns 0/900, 10% caught 97.8% (880/900), 20% always.
SCREEN_Z = 3.0
CONFIRM_Z = 2.5
RERUN_SAMPLES = 20
# A screen's significance: one-sided 2.3%. At sigma_b = 1% a benchmark 6% slower passes it 98% of the
# time (z_alpha, 4.50, would pass 32%), and an unchanged 300-benchmark suite re-runs 6.8 false
# suspects; where se < ln factor / 5 (1.10 at 2% within-run noise) the factor margin rules them out.
SUSPECT_Z = 2.0


@dataclass(frozen=True)
class Comparison:
    verdict: str  # slower, faster, same, noisy, new, gone, failed, skipped
    ratio: float | None  # head / base, medians
    standard_error: float | None  # of the log ratio
    z: float | None


def log_deviations(side):
    """Absolute deviations of log samples from their median, and the sample count; or, where only
    asv's quartiles of at least 3 samples were recorded, a sigma from them (one pseudo-deviation)."""
    samples = side.get("samples")
    if samples and len(samples) >= 3:
        logs = [math.log(s) for s in samples]
        centre = statistics.median(logs)
        return [abs(x - centre) for x in logs], len(samples)
    q25, q75, repeat = side.get("q25"), side.get("q75"), side.get("repeat")
    # repeat >= 3: the quartiles of one sample are that sample (q25 == q75), which read as no noise at all.
    if q25 and q75 and q25 > 0 and repeat and repeat >= 3:
        return [math.log(q75 / q25) / 1.349 / 1.4826], repeat
    return None, None


def _within_sigma(runs):
    """(sigma of one log sample, each run's sample count), sigma pooled over the runs, each about its
    own median; (None, None) if a run has no noise estimate."""
    deviations, counts = [], []
    for run in runs:
        run_deviations, n = log_deviations(run)
        if run_deviations is None:
            return None, None
        deviations += run_deviations
        counts.append(n)
    # One sigma pooled over the runs: from 10 + 10 samples a pooled MAD varies half as much as two
    # separate ones, which kept true 10% slowdowns from reading as noisy.
    return 1.4826 * statistics.median(deviations), counts


def _median_variance(sigma, n):
    return math.pi / 2 * sigma ** 2 / n


def _side_variance(sigma, between_variance, counts):
    """Variance of a commit's log time estimated from runs of these sample counts, each run with its
    own offset of variance between_variance, combined by inverse variance."""
    return 1 / sum(1 / (between_variance + _median_variance(sigma, n)) for n in counts)


def within_variance(base, head):
    """Variance of the log ratio of base's and head's medians from their samples alone (no run
    offsets); None where either side has fewer than 3 samples (and no quartiles of 3 or more)."""
    sigma, counts = _within_sigma([base, head])
    return None if sigma is None else sum(_median_variance(sigma, n) for n in counts)


def z_alpha(n_benchmarks, family_alpha=FAMILY_ALPHA):
    return statistics.NormalDist().inv_cdf(1 - family_alpha / max(1, n_benchmarks))


def _valid(value):
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value > 0


def _decide(ratio, se, resolving_se, za, slower_z, factor, power_z) -> Comparison:
    """The three-part rule on a ratio and the standard error of its log; `resolving_se` is the se of
    the decision that will stand (a screen's confirmation), `slower_z` the significance a suspect needs."""
    se = se or 1e-12
    z = math.log(ratio) / se
    if za * resolving_se > math.log(factor):
        return Comparison("noisy", ratio, se, z)
    if z > slower_z and math.log(ratio) + power_z * se >= math.log(factor):
        return Comparison("slower", ratio, se, z)
    if z < -za and -math.log(ratio) + power_z * se >= math.log(factor):
        return Comparison("faster", ratio, se, z)
    return Comparison("same", ratio, se, z)


def compare(base, head, n_benchmarks, factor=1.10, family_alpha=REGRESSION_ALPHA, power_z=SCREEN_Z,
            between_run_sigma=None, screen=False) -> Comparison:
    """base, head: dicts with value (median), and samples or q25/q75 with repeat; or None if absent.

    between_run_sigma: sigma of one run's log median between runs of identical code (None: not
    calibrated, taken as 0). screen: a confirming re-run of every "slower" follows (see the module
    docstring), so "slower" is a suspect at SUSPECT_Z and "noisy" means the confirmation cannot resolve."""
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
    sigma, counts = _within_sigma([base, head])
    if sigma is None:
        return Comparison("noisy", ratio, None, None)  # one sample: no noise estimate, cannot gate
    base_n, head_n = counts
    between = (between_run_sigma or 0.0) ** 2
    se = math.sqrt(_median_variance(sigma, base_n) + _median_variance(sigma, head_n) + 2 * between)
    za = z_alpha(n_benchmarks, family_alpha)
    if not screen:
        return _decide(ratio, se, se, za, za, factor, power_z)
    confirming_se = math.sqrt(_side_variance(sigma, between, [base_n, RERUN_SAMPLES])
                              + _side_variance(sigma, between, [head_n, RERUN_SAMPLES]))
    return _decide(ratio, se, confirming_se, za, SUSPECT_Z, factor, power_z)


def confirm(base, head, base_rerun, head_rerun, n_benchmarks, factor=1.10, family_alpha=REGRESSION_ALPHA,
            between_run_sigma=None) -> Comparison:
    """Decide a suspect again on each commit's two runs (all carry samples).

    Without a between-run sigma (None or 0) every sample of a commit is alike: they are pooled, and
    the median of all 30 decides. With one, each run has its own offset: each commit's log time is
    the inverse-variance mean of its runs' log medians (the module docstring derives it)."""
    if not between_run_sigma:
        def pooled(first, again):
            samples = list(first["samples"]) + list(again["samples"])
            return {"value": statistics.median(samples), "samples": samples}

        return compare(pooled(base, base_rerun), pooled(head, head_rerun), n_benchmarks, factor, family_alpha,
                       power_z=CONFIRM_Z)
    runs = [base, base_rerun, head, head_rerun]
    sigma, counts = _within_sigma(runs)
    logs = [math.log(statistics.median(run["samples"])) for run in runs]
    if sigma is None:
        return Comparison("noisy", math.exp(logs[2] - logs[0]), None, None)  # a run of 1-2 samples
    between = between_run_sigma ** 2

    def log_time(first):
        """(log time, its variance) of the commit whose two runs start at runs[first]."""
        weights = [1 / (between + _median_variance(sigma, n)) for n in counts[first:first + 2]]
        return sum(w * x for w, x in zip(weights, logs[first:first + 2])) / sum(weights), 1 / sum(weights)

    (base_log, base_variance), (head_log, head_variance) = log_time(0), log_time(2)
    se = math.sqrt(base_variance + head_variance)
    za = z_alpha(n_benchmarks, family_alpha)
    return _decide(math.exp(head_log - base_log), se, se, za, za, factor, CONFIRM_Z)
