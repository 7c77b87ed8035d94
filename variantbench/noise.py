"""Each timing benchmark's between-run noise, calibrated from the A/A pairs in the recorded history.

asv's samples of one run spread 0.1-0.5% on the H100, yet a ratio moved ~5% between two runs of
identical code: every sample of a run shares its clock/power state, temperature and process
placement, so the run as a whole sits off by an offset its samples cannot show (decide.py's docstring
has the model). That offset's sigma, sigma_b, is what decide.compare and decide.confirm take as
`between_run_sigma`, and the history measures it: two consecutive measured commits (by commit date)
of one machine identity whose timed code is identical (`same_timed_code`) are an A/A pair, and each
benchmark's log ratio of medians d across the pair has E[d^2] = 2 sigma_b^2 + w^2, w^2 the within-run
variance of that ratio (decide.within_variance, what decide.compare counts already). So

    sigma_b = sqrt(max(0, mean(d^2 - w^2)) / 2),

a root mean square, not 1.4826 x MAD: (1) the decision needs a variance, and a benchmark that now and
then jumps between runs (the rare thermal or clock excursion is what makes a false alarm) has a larger
one than its MAD says; (2) from 3-6 pairs the RMS varies less (relative sd 0.71/sqrt(k) against the
MAD's 1.17/sqrt(k)).

Which pairs (simulated at factor 1.05, tests/test_decide.py: 300 benchmarks, sigma_b = 1%, 6 pairs each):

- pooled over every parameter set of a benchmark (each pair weighing the same): 1800 pairs put it
  within 5%. This is what a parameter set gets by default.
- a parameter set's own, from its pairs alone, wherever it has MIN_PAIRS: with 6 pairs its mean
  square follows chi^2_6 / 6, below a quarter (sigma_b low by half or more) for 4% of benchmarks, and
  those failed 3.5% of unchanged gates (35/1000) instead of 0.1%. So a set keeps its own only where its
  pairs are significantly noisier than the pooled sigma_b (OWN_QUANTILE): ~1% of sets by chance alone.
- where a tenth of the benchmarks moves 3% between runs, the pool grows to 1.3% and every benchmark
  reads "noisy" at 1.05 (none fails, none is caught); 78% of the noisy tenth are found by their own
  pairs. Pooling only the sets not found noisier gave the quiet rest back their 1% but failed 14% of
  unchanged gates (83/600): the noisy sets 6 pairs miss then read quiet. More A/A pairs find them.

With no pair at all a benchmark has no calibration (None): the decision then has no between-run term,
as before calibration existed. Nothing is cached on disk: the history on disk is the cache.
"""

import math
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from variantbench import decide, results

# The code a timing depends on besides the machine. Two commits that differ nowhere here time the same
# calls the same way, whatever else changed (docs, reports, the CLI, the gate): kernels/ is what is
# timed; reference/ is the check every setup runs first, and draws the comms inputs; suite/ the asv
# benchmarks (grid, setup, repeats); catalog/ what each name means; timing.py the timers; cases.py
# the inputs; metrics.py the interleaved ratio rounds; power.py the NVML sampler thread that runs
# beside every timed sample; shapes.py the sizes a shape name stands for. A path listed in excess
# only loses pairs; one missing would count a real change as noise, and widen every verdict.
TIMED_PATHS = ("kernels/", "reference/", "suite/", "variantbench/catalog/", "variantbench/timing.py",
               "variantbench/cases.py", "variantbench/metrics.py", "variantbench/power.py", "variantbench/shapes.py")
# The fewest pairs a parameter set's own sigma_b is judged on: from k pairs its mean square spans
# chi^2_k / k times the true one, 0.005-4.6 (1%-99%) at 2 pairs, 0.04-3.8 at 3, 0.15-2.8 at 6.
MIN_PAIRS = 3
# A parameter set's own pairs replace its benchmark's pooled sigma_b only where they are noisier than
# the pool at this one-sided level: a set as noisy as its pool keeps the pool 99% of the time.
OWN_QUANTILE = 0.99


@dataclass(frozen=True)
class Noise:
    sigma: float  # sigma_b: between runs of identical code, of one run's log median
    pairs: int  # the A/A pairs it was estimated from
    scope: str  # "own": this parameter set's pairs; "pooled": every parameter set of its benchmark


@dataclass(frozen=True)
class Calibration:
    own: dict  # (benchmark, params) -> Noise, where its own pairs say it is noisier than its benchmark
    pooled: dict  # benchmark -> Noise over every parameter set's pairs

    def get(self, benchmark: str, params: tuple) -> Noise | None:
        """The between-run noise to decide (benchmark, params) with (see estimate); None where its
        benchmark has no A/A pair."""
        return self.own.get((benchmark, tuple(params))) or self.pooled.get(benchmark)


def same_timed_code(root: Path, first: str, second: str) -> bool | None:
    """Whether commits `first` and `second` have identical TIMED_PATHS in the git repository at root;
    None where git does not know one of them (results from a branch since deleted, a shallow clone)."""
    diff = subprocess.run(["git", "-C", str(root), "diff", "--quiet", first, second, "--", *TIMED_PATHS],
                          capture_output=True, text=True)
    if diff.returncode in (0, 1):
        return diff.returncode == 0
    if subprocess.run(["git", "-C", str(root), "rev-parse", "--git-dir"], capture_output=True).returncode != 0:
        raise RuntimeError(f"{root} is not a git repository: it cannot tell which results are A/A pairs")
    known = [subprocess.run(["git", "-C", str(root), "cat-file", "-e", f"{commit}^{{commit}}"],
                            capture_output=True).returncode == 0 for commit in (first, second)]
    if not all(known):
        return None
    raise RuntimeError(f"git diff {first[:8]} {second[:8]} in {root} failed: {diff.stderr.strip()}")


def _side(row):
    return {"value": float(row["value"]), "samples": row["samples"], "q25": row["q25"], "q75": row["q75"],
            "repeat": row["repeat"]}


def aa_pairs(runs: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Every A/A pair of timing benchmarks in `runs` (history rows of one machine identity): per
    (benchmark, params), each two consecutive measured commits by date whose timed code is identical.
    One row per pair: benchmark, params, first, second (commits), log_ratio (ln of the medians' ratio)
    and within_variance (of that log ratio, from the samples). A pair with a run of fewer than 3
    samples (no within-run part to take off) is left out, as are failures and skips."""
    columns = ["benchmark", "params", "first", "second", "log_ratio", "within_variance"]
    timed = runs[runs.benchmark.str.contains(r"\.time_") & (pd.to_numeric(runs.value, errors="coerce") > 0)]
    timed = timed.sort_values(["date", "commit"], kind="stable").drop_duplicates(
        ["benchmark", "params", "commit"], keep="last")
    same = {}  # (first, second) -> same_timed_code: one git call per pair of commits, not per benchmark
    rows = []
    for (benchmark, params), measured in timed.groupby(["benchmark", "params"], sort=False):
        records = measured.to_dict("records")
        for first, second in zip(records, records[1:]):
            commits = first["commit"], second["commit"]
            if commits not in same:
                same[commits] = same_timed_code(root, *commits)
            within = decide.within_variance(_side(first), _side(second)) if same[commits] else None
            if within is not None:
                rows.append((benchmark, params, *commits, math.log(second["value"] / first["value"]), within))
    return pd.DataFrame(rows, columns=columns)


def _chi2_quantile_ratio(p, k):
    """chi^2_k's p-quantile over k (Wilson-Hilferty: within 0.3% of the exact one from k = 3)."""
    z = statistics.NormalDist().inv_cdf(p)
    return (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def estimate(pairs: pd.DataFrame) -> Calibration:
    """The Calibration from aa_pairs' rows (benchmark, params, log_ratio, within_variance).

    Per benchmark, sigma_b pooled over all its parameter sets' pairs. A parameter set keeps its own
    only where it has MIN_PAIRS pairs or more and they are significantly noisier than the pooled
    sigma_b predicts: their mean d^2 over 2 sigma_pooled^2 + their mean w^2 beyond chi^2_k / k's
    OWN_QUANTILE."""
    squares = pairs.assign(square=pairs.log_ratio ** 2)
    pooled = {benchmark: _noise(rows.square.mean() - rows.within_variance.mean(), len(rows), "pooled")
              for benchmark, rows in squares.groupby("benchmark", sort=False)}
    per_params = squares.groupby(["benchmark", "params"], sort=False).agg(
        square=("square", "mean"), within=("within_variance", "mean"), k=("square", "size"))
    own = {}
    for (benchmark, params), square, within, k in zip(per_params.index, per_params.square, per_params.within,
                                                       per_params.k):
        expected = 2 * pooled[benchmark].sigma ** 2 + within
        if k >= MIN_PAIRS and square > expected * _chi2_quantile_ratio(OWN_QUANTILE, k):
            own[(benchmark, params)] = _noise(square - within, k, "own")
    return Calibration(own, pooled)


def _noise(mean_excess, pairs, scope):
    """sigma_b from the mean of d^2 - w^2 over A/A pairs (the module docstring derives it)."""
    return Noise(math.sqrt(max(0.0, mean_excess) / 2), int(pairs), scope)


def of_identity(history: pd.DataFrame, identity: dict) -> pd.DataFrame:
    """The history's rows measured on `identity` (results.IDENTITY_KEYS). A key either side lacks is
    unknown, not different, as gate.check_identity has it: older files lack cudnn and nccl."""
    keep = pd.Series(True, index=history.index)
    for key in results.IDENTITY_KEYS:
        value = identity.get(key)
        if not pd.isna(value) and key in history:
            keep &= history[key].isna() | (history[key].astype(str) == str(value))
    return history[keep]


def calibrate(history: pd.DataFrame, root: Path, identity: dict, leave_out=()) -> Calibration:
    """Each timing benchmark's between-run noise on `identity`, from the history's A/A pairs
    (history: results.load_history; root: the git repository that knows its commits). leave_out: the
    commits being decided (BASE, HEAD): a docs-only pull request is itself an A/A pair, and the
    difference under judgement must not set the noise it is judged against."""
    kept = history[~history.commit.isin(list(leave_out))]
    return estimate(aa_pairs(of_identity(kept, identity), root))
