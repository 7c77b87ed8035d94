"""The signal budget as a decision, not a point estimate.

A variant swamps the modeling signal when its cost per unit of useful work exceeds the family
baseline's by more than the budget (default 1.10x). The ratio is a measurement: on an H100 it moved
~5% between runs of the same code, and 21 of 25 attention rows read "over budget" as bare ratios.
So, per case (variant, implementation, shape):

- "over budget": the ratio is *significantly* over the budget: ln(ratio / budget) exceeds z standard
  errors, z the one-sided normal quantile at FAMILY_ALPHA / cases compared (Bonferroni, as the
  regression decision in variantbench.decide), so the chance that any case truly at the budget reads
  over stays under FAMILY_ALPHA;
- "at budget": over the budget, but not significantly: reported, never flagged;
- "within": at or under the budget;
- "failed": no ratio (the benchmark failed or was skipped at this shape).

The standard error is the run's own (track_ratio_standard_error: the two sides' samples in
alternating blocks, variantbench.timing) with a floor of RUN_SIGMA for what one run cannot see:
on an H200 (7ed2c48, tools/ratio_truth.py) five recorded ratios sat 0.3-1.5% from do_bench medians of
the same calls, so 1% is a typical run-to-run offset. A variant's verdict is that of its fastest
fused implementation (lowest ratio) at that shape. The gate confirms a variant newly over budget on
a re-run and decides again on both runs pooled (`pooled`).
"""

import math

import pandas as pd

from variantbench import decide, figures

RUN_SIGMA = 0.01  # log-scale floor of a ratio's standard error: see the module's docstring
RATIO = figures.RATIO.ending
STANDARD_ERROR = figures.RATIO_STANDARD_ERROR.ending
NOISE = figures.RATIO_NOISE.ending  # relative IQR: what results before the standard error carried
TIME_RATIO = figures.TIME_RATIO.ending
VERDICTS = ("failed", "over budget", "at budget", "within")  # flagged first


def standard_error(se, noise) -> float:
    """The log ratio's standard error: the recorded one, else one from the relative IQR of the old
    interleaved samples (25 a side: sigma ~ IQR / 1.349, median's se ~ 1.25 sigma / 5), floored."""
    if se is not None and not pd.isna(se):
        return max(float(se), RUN_SIGMA)
    if noise is not None and not pd.isna(noise):
        return max(float(noise) / 1.349 * 1.25 / 5, RUN_SIGMA)
    return RUN_SIGMA


def verdict(ratio, se, budget, n_cases) -> str:
    if ratio is None or pd.isna(ratio) or ratio <= 0:
        return "failed"
    if ratio <= budget:
        return "within"
    z = math.log(ratio / budget) / se
    return "over budget" if z > decide.z_alpha(n_cases) else "at budget"


def _column(frame, ending):
    rows = frame[frame.benchmark.str.endswith(ending)]
    return {(b.split(".")[0].removeprefix("bench_"), tuple(p)): v for b, p, v in zip(rows.benchmark, rows.params, rows.value)}


def judged(family_name, implementation_name) -> bool:
    """Whether the verdict weighs an implementation: a fused one, on the devices the family baseline
    runs on. The reference is no candidate; a block split over every GPU (every_gpu, where the
    baseline takes one) is what the split costs, not B on A's device. A name the catalog no longer
    has (older results) is judged, the reference's excepted."""
    from variantbench.catalog import Unsupported, family

    try:
        fam = family(family_name)
        implementation = fam.implementation(implementation_name)
    except Unsupported:
        return implementation_name != "reference"
    baseline = fam.implementation(fam.baseline_implementation)
    return implementation.fused and (not implementation.every_gpu or baseline.every_gpu)


def case_frame(rows: pd.DataFrame, budget_for) -> pd.DataFrame:
    """One row per case with a ratio benchmark in one commit's results: family, variant,
    implementation, shape, ratio, standard error, budget, time ratio and verdict."""
    ratios, ses, noises, times = (_column(rows, e) for e in (RATIO, STANDARD_ERROR, NOISE, TIME_RATIO))
    records = []
    for (family, params), ratio in ratios.items():
        if len(params) < 3 or not judged(family, params[1]):
            continue
        ratio = None if ratio is None or pd.isna(ratio) else float(ratio)
        records.append({"family": family, "variant": params[0], "implementation": params[1], "shape": params[2],
                        "ratio": ratio, "standard_error": standard_error(ses.get((family, params)),
                                                                         noises.get((family, params))),
                        "budget": budget_for(family, params[0]), "time_ratio": times.get((family, params))})
    frame = pd.DataFrame(records, columns=["family", "variant", "implementation", "shape", "ratio",
                                           "standard_error", "budget", "time_ratio"])
    n = int(frame.ratio.notna().sum())
    frame["verdict"] = [verdict(r, se, b, n) for r, se, b in zip(frame.ratio, frame.standard_error, frame.budget)]
    return frame


def variant_frame(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, variant, shape): its fastest fused implementation (lowest ratio), that
    ratio, its verdict and time ratio; "failed" where no implementation has a ratio."""
    rows = []
    for (family, variant, shape), group in cases.groupby(["family", "variant", "shape"], sort=False):
        measured = group[group.ratio.notna()]
        best = measured.loc[measured.ratio.idxmin()] if not measured.empty else group.iloc[0]
        rows.append({"family": family, "variant": variant, "shape": shape,
                     "fastest": best.implementation if not measured.empty else "",
                     "ratio": best.ratio, "standard_error": best.standard_error, "budget": best.budget,
                     "time_ratio": best.time_ratio, "verdict": best.verdict if not measured.empty else "failed"})
    frame = pd.DataFrame(rows, columns=["family", "variant", "shape", "fastest", "ratio", "standard_error", "budget",
                                        "time_ratio", "verdict"])
    order = {v: i for i, v in enumerate(VERDICTS)}
    return frame.sort_values("verdict", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def pooled(first: pd.Series, again: pd.Series, n_cases) -> dict:
    """A case's ratio decided again on two runs: the inverse-variance mean of the two log ratios, and
    a standard error no smaller than half their difference (two runs that disagree more than their
    errors say reveal a run-to-run offset neither saw)."""
    logs = [math.log(first.ratio), math.log(again.ratio)]
    weights = [1 / first.standard_error**2, 1 / again.standard_error**2]
    mean = sum(w * x for w, x in zip(weights, logs)) / sum(weights)
    se = max(1 / math.sqrt(sum(weights)), abs(logs[0] - logs[1]) / 2)
    ratio = math.exp(mean)
    return {"ratio": ratio, "standard_error": se, "verdict": verdict(ratio, se, first.budget, n_cases)}


def newly_over(base_variants: pd.DataFrame, head_variants: pd.DataFrame) -> pd.DataFrame:
    """Head's variants over budget that were not over on BASE (at the same shape); each with its BASE
    verdict. A variant already over on BASE is reported, never failed: the PR did not cause it."""
    base = {(r.family, r.variant, r.shape): r.verdict for r in base_variants.itertuples()}
    over = head_variants[head_variants.verdict == "over budget"].copy()
    over["base_verdict"] = [base.get((r.family, r.variant, r.shape), "new") for r in over.itertuples()]
    over["confirmation"] = ""  # `confirm` says what a re-run did
    return over[over.base_verdict != "over budget"].reset_index(drop=True)


def markdown(variants: pd.DataFrame) -> list[str]:
    """The summary's leading table: one row per variant and shape, flagged first."""
    if variants.empty:
        return []
    lines = ["| variant | shape | fastest fused | x baseline per useful work | se | budget | verdict | "
             "time ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in variants.itertuples():
        ratio = "-" if pd.isna(r.ratio) else f"{r.ratio:.3f}"
        time_ratio = "-" if r.time_ratio is None or pd.isna(r.time_ratio) else f"{r.time_ratio:.3f}"
        lines.append(f"| {r.family}/{r.variant} | {r.shape} | {r.fastest or '-'} | {ratio} | {r.standard_error:.1%} "
                     f"| {r.budget:g} | {r.verdict} | {time_ratio} |")
    return lines


def confirm(first_cases: pd.DataFrame, again_cases: pd.DataFrame, over: pd.DataFrame) -> pd.DataFrame:
    """`over` (newly_over's rows) decided again: each case of the variant at that shape pooled with its
    re-run (`pooled`), the variant judged by its fastest pooled case. `confirmation` says what the
    re-run did; a variant the re-run has no ratio for stays over ("unconfirmed, kept"): an
    unconfirmed suspect never passes silently."""
    over = over.copy()
    n = int(first_cases.ratio.notna().sum())
    again = {(r.family, r.variant, r.implementation, r.shape): r for r in again_cases.itertuples()}
    for i, row in over.iterrows():
        cases = first_cases[(first_cases.family == row.family) & (first_cases.variant == row.variant)
                            & (first_cases["shape"] == row["shape"]) & first_cases.ratio.notna()]
        decided = []
        for case in cases.itertuples():
            rerun = again.get((case.family, case.variant, case.implementation, case.shape))
            if rerun is not None and rerun.ratio is not None and not pd.isna(rerun.ratio):
                decided.append((case.implementation, pooled(pd.Series(case._asdict()), pd.Series(rerun._asdict()), n)))
        if not decided:
            over.loc[i, "confirmation"] = "re-run has no ratio: unconfirmed, kept"
            continue
        fastest, best = min(decided, key=lambda d: d[1]["ratio"])
        over.loc[i, ["fastest", "ratio", "standard_error", "verdict"]] = [fastest, best["ratio"], best["standard_error"],
                                                                         best["verdict"]]
        over.loc[i, "confirmation"] = ("confirmed by re-run" if best["verdict"] == "over budget"
                                       else "not confirmed by re-run")
    return over


def rerun_benchmarks(rows: pd.DataFrame, over: pd.DataFrame) -> list[str]:
    """The asv benchmarks a re-run of the variants in `over` needs: each family's ratio and its
    standard error (the Metrics class computes both in one process and memo)."""
    families = set(over.family)
    names = rows.benchmark[rows.benchmark.str.endswith((RATIO, STANDARD_ERROR))].unique()
    return sorted(n for n in names if n.split(".")[0].removeprefix("bench_") in families)


def failing(over: pd.DataFrame) -> pd.DataFrame:
    """The variants that fail the gate: newly over budget and still over after any re-run."""
    return over[over.verdict == "over budget"]


def gate_markdown(head_variants: pd.DataFrame, over: pd.DataFrame, selection: str = "") -> list[str]:
    """The gate summary's budget part: HEAD's variants, then what fails, what a re-run cleared and
    what was already over on BASE. `selection`: the options that chose the cases judged (none: all)."""
    lines = ["### Signal budget on HEAD: one row per variant (its fastest fused implementation)", ""]
    lines += markdown(head_variants) or [
        "No ratio to baseline recorded on HEAD" + (f" of the selection {selection}" if selection else "")
        + ": no signal budget is judged."]
    lines.append("")
    failed = failing(over)
    if not failed.empty:
        lines += ["### Newly over the signal budget", "", "| variant | shape | fastest fused | x baseline | se | budget | "
                  "BASE | confirmation |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r.family}/{r.variant} | {r.shape} | {r.fastest} | {r.ratio:.3f} | {r.standard_error:.1%} | "
                  f"{r.budget:g} | {r.base_verdict} | {r.confirmation or 'no re-run (--no-run)'} |"
                  for r in failed.itertuples()]
        lines.append("")
    cleared = over[over.verdict != "over budget"]
    if not cleared.empty:
        lines += ["Newly over on the first run, cleared by the re-run: " + ", ".join(
            f"{r.family}/{r.variant} @ {r.shape} ({r.ratio:.3f}, {r.verdict})" for r in cleared.itertuples()) + ".", ""]
    already = head_variants[head_variants.verdict == "over budget"]
    already = already[~already.set_index(["family", "variant", "shape"]).index.isin(
        over.set_index(["family", "variant", "shape"]).index)]
    if not already.empty:
        lines += ["Already over budget on BASE (reported, not failed): " + ", ".join(
            f"{r.family}/{r.variant} @ {r.shape}" for r in already.itertuples()) + ".", ""]
    return lines
