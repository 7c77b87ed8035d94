"""The summary page's tables: one commit's figures per case, and per variant its fastest fused
implementation against the signal budget (variantbench.budget decides the verdicts)."""

import pandas as pd

from variantbench import budget, figures

VERDICT_ORDER = {v: i for i, v in enumerate(budget.VERDICTS + ("",))}  # flagged rows first

# Per-case figures of the latest commit: (benchmark ending, column, scale).
FIGURES = tuple((f.ending, f.label, f.scale) for f in figures.REPORT_TABLE)


def commit_dates(history: pd.DataFrame) -> pd.DataFrame:
    """(machine, commit, date) of every results file of the history, oldest first."""
    return history[["machine", "commit", "date"]].drop_duplicates().sort_values("date", kind="stable")


def _family_of(benchmark):
    return benchmark.split(".")[0].removeprefix("bench_")


def latest_table(frame: pd.DataFrame, budget_for) -> pd.DataFrame:
    """One row per (family, shape, variant, implementation) of one commit's results: the FIGURES,
    the budget, the ratio's standard error and its verdict (variantbench.budget: "failed", "over
    budget", "at budget", "within", or "" with no ratio)."""
    columns = [c for _, c, _ in FIGURES]
    rows = {}
    for ending, column, scale in FIGURES:
        picked = frame[frame.benchmark.str.endswith(ending)]
        for benchmark, params, value, failed in zip(picked.benchmark, picked.params, picked.value, picked.failed):
            if len(params) < 3:
                continue
            row = rows.setdefault((_family_of(benchmark), params[2], params[0], params[1]),
                                  {"failed": False, **dict.fromkeys(columns, float("nan"))})
            if failed:
                row["failed"] = True
            elif value == value:
                row[column] = float(value) * scale
    table = pd.DataFrame([{"family": k[0], "shape": k[1], "variant": k[2], "implementation": k[3], **v}
                          for k, v in rows.items()], columns=["family", "shape", "variant", "implementation",
                                                              *columns, "failed"])
    table = table[table[columns].notna().any(axis=1) | table.failed.astype(bool)].copy()
    table["budget"] = [budget_for(f, v) for f, v in zip(table.family, table.variant)]
    decided = {(c.family, c.shape, c.variant, c.implementation): c for c in budget.case_frame(frame, budget_for).itertuples()}
    keys = list(zip(table.family, table["shape"], table.variant, table.implementation))
    table["standard_error"] = [decided[k].standard_error if k in decided else float("nan") for k in keys]
    table["verdict"] = ["failed" if failed and ms != ms else "" if ratio != ratio or k not in decided else
                        decided[k].verdict for failed, ms, ratio, k in
                        zip(table.failed, table["ms"], table["x baseline"], keys)]
    return table


def variant_table(table: pd.DataFrame) -> pd.DataFrame:
    """A family table's cases as one row per variant and shape: its fastest fused implementation's
    ratio and verdict (variantbench.budget.variant_frame)."""
    cases = table[(table.implementation != "reference") & (table.verdict != "")]
    cases = cases.rename(columns={"x baseline": "ratio", "time ratio": "time_ratio"})
    cases = cases.assign(ratio=cases.ratio.where(cases.verdict != "failed"))
    return budget.variant_frame(cases[["family", "variant", "implementation", "shape", "ratio", "standard_error",
                                       "budget", "time_ratio", "verdict"]])


def family_table(mine: pd.DataFrame, order: pd.DataFrame, family: str, budget_for) -> pd.DataFrame:
    """latest_table of one machine's family, each shape at the latest commit that measured its
    metrics there (else its forward): runs sharded by shape, or cut short, leave other shapes at
    earlier commits, and each row names its commit."""
    measured = mine[mine.benchmark.str.startswith(f"bench_{family}.")]
    measured = measured[measured.params.map(len) >= 3]
    shapes = measured.params.map(lambda p: p[2])
    tables = []
    for shape in dict.fromkeys(shapes):
        rows = measured[shapes == shape]
        with_metrics = set(rows[rows.benchmark.str.endswith("Metrics.track_ratio_to_baseline")].commit)
        commits = with_metrics or set(rows.commit)
        commit = next(c for c in reversed(list(order.commit)) if c in commits)
        table = latest_table(rows[rows.commit == commit], budget_for)
        tables.append(table.assign(commit=commit[:8]))
    if not tables:
        return latest_table(measured.iloc[0:0], budget_for).assign(commit="")
    table = pd.concat(tables, ignore_index=True)
    return table.sort_values(["shape", "variant", "implementation"]).sort_values(
        "verdict", key=lambda v: v.map(VERDICT_ORDER), kind="stable")
