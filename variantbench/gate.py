"""compare and gate over recorded results: verdicts per benchmark, the signal budget, a Markdown summary.

Results of BASE and HEAD are compared only when measured on the same GPU, as many of them, with the
same driver, CUDA, torch and triton: anything else is "incomparable" (exit 3), never a pass.
"""

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from variantbench import decide, results

IDENTITY = results.IDENTITY_KEYS  # one list: what makes two measurements comparable
# Every family's suite module tracks these (bench_<family>.<Family>Metrics.track_...).
RATIO_BENCHMARK = "Metrics.track_ratio_to_baseline"
NOISE_BENCHMARK = "Metrics.track_ratio_noise"


class Incomparable(Exception):
    """BASE and HEAD cannot be compared (different hardware or software, or one has no results)."""


@dataclass(frozen=True)
class Settings:
    regression_factor: float = 1.10
    budget: float = 1.10
    family_budget: dict = field(default_factory=dict)  # family -> budget
    variant_budget: dict = field(default_factory=dict)  # "family/variant" -> budget

    def budget_for(self, family, variant):
        return self.variant_budget.get(f"{family}/{variant}", self.family_budget.get(family, self.budget))


def load_settings(pyproject: Path) -> Settings:
    """[tool.variantbench] of pyproject.toml: regression_factor, budget, and per family / variant
    budgets in [tool.variantbench.budgets] as `attention = 1.2` or `"attention/alibi" = 1.5`."""
    try:
        table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("variantbench", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise results.BadResults(f"{pyproject}: unreadable settings ({error})") from None
    budgets = table.get("budgets", {})
    return Settings(
        regression_factor=float(table.get("regression_factor", 1.10)),
        budget=float(table.get("budget", 1.10)),
        family_budget={k: float(v) for k, v in budgets.items() if "/" not in k},
        variant_budget={k: float(v) for k, v in budgets.items() if "/" in k},
    )


def commit_results(results_dir: Path, commit: str) -> tuple[pd.DataFrame, dict]:
    """(rows, identity) of one commit's results, from every machine that has them; raises
    Incomparable if none or if they come from machines of different identities."""
    paths = [p for p in Path(results_dir).glob(f"*/{commit[:8]}*.json") if p.name != "machine.json"]
    if not paths:
        raise Incomparable(f"no results for {commit} under {results_dir}")
    frames, identities = [], {}
    for path in paths:
        frame, identities[path] = results.load_with_identity(path)
        frames.append(frame)
    distinct = {tuple(sorted(i.items())) for i in identities.values()}
    if len(distinct) > 1:
        raise Incomparable(f"results for {commit} come from different machines: {sorted(distinct)}")
    return pd.concat(frames, ignore_index=True), next(iter(identities.values()))


def check_identity(base_identity, head_identity):
    differ = [f"{k}: {base_identity.get(k)} vs {head_identity.get(k)}" for k in IDENTITY
              if base_identity.get(k) != head_identity.get(k)]
    if differ:
        raise Incomparable("BASE and HEAD were measured on different hardware or software (" + "; ".join(differ) + ")")


def _side(row):
    if row is None:
        return None
    value = row["value"]
    return {"value": None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value),
            "samples": row["samples"], "q25": row["q25"], "q75": row["q75"], "repeat": row["repeat"]}


def compare_frames(base: pd.DataFrame, head: pd.DataFrame, factor: float) -> pd.DataFrame:
    """One row per timing benchmark (time_*) and parameter set found on either side: ratio,
    standard error, z and verdict (faster, slower, same, noisy, new, gone, failed, skipped)."""
    def timing(frame):
        return {(r.benchmark, r.params): r._asdict() for r in frame[frame.benchmark.str.contains(r"\.time_")].itertuples()}

    base_rows, head_rows = timing(base), timing(head)
    keys = sorted(set(base_rows) | set(head_rows), key=str)
    n = sum(1 for k in keys if k in base_rows and k in head_rows)
    rows = []
    for key in keys:
        c = decide.compare(_side(base_rows.get(key)), _side(head_rows.get(key)), n, factor=factor)
        rows.append({"benchmark": key[0], "params": "/".join(key[1]), "verdict": c.verdict, "ratio": c.ratio,
                     "standard_error": c.standard_error, "z": c.z})
    return pd.DataFrame(rows, columns=["benchmark", "params", "verdict", "ratio", "standard_error", "z"])


def confirm_frame(verdicts: pd.DataFrame, base, head, base_rerun, head_rerun, factor: float) -> pd.DataFrame:
    """Verdicts with each "slower" decided again on its commits' samples pooled with a re-run's.

    A suspect the re-run does not confirm becomes "same" (noted in `confirmation`); one the re-run has
    no samples for (it crashed there) stays "slower": an unconfirmed suspect never passes silently.
    """
    verdicts = verdicts.copy()
    verdicts["confirmation"] = ""
    n = int(verdicts.verdict.isin(["slower", "faster", "same", "noisy"]).sum())
    for i, row in verdicts[verdicts.verdict == "slower"].iterrows():
        params = tuple(row.params.split("/"))
        sides = [_benchmark_side(frame, row.benchmark, params) for frame in (base, head, base_rerun, head_rerun)]
        if any(side is None or not side["samples"] for side in sides):
            verdicts.loc[i, "confirmation"] = "re-run has no samples: unconfirmed, kept"
            continue
        c = decide.confirm(*sides, n, factor=factor)
        verdicts.loc[i, ["verdict", "ratio", "standard_error", "z"]] = [
            "slower" if c.verdict == "slower" else "same", c.ratio, c.standard_error, c.z]
        verdicts.loc[i, "confirmation"] = "confirmed by re-run" if c.verdict == "slower" else "not confirmed by re-run"
    return verdicts


def budget_frame(base: pd.DataFrame, head: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Per (family, variant, implementation, shape): ratio to baseline on BASE and HEAD, the budget,
    and whether HEAD is newly over it (`new_over`) or was already over on BASE (`already_over`)."""
    def ratios(frame):
        picked = frame[frame.benchmark.str.endswith(RATIO_BENCHMARK)]
        noise = frame[frame.benchmark.str.endswith(NOISE_BENCHMARK)]
        noise = dict(zip(zip(noise.benchmark.str.split(".").str[0], noise.params), noise.value))
        return {(b.split(".")[0], p): (v, noise.get((b.split(".")[0], p)))
                for b, p, v in zip(picked.benchmark, picked.params, picked.value) if v is not None and not pd.isna(v)}

    base_r, head_r = ratios(base), ratios(head)
    rows = []
    for (module, params), (ratio, noise) in head_r.items():
        family = module.removeprefix("bench_")
        budget = settings.budget_for(family, params[0])
        base_ratio = base_r.get((module, params), (None, None))[0]
        over = ratio > budget
        rows.append({"params": f"{family}/" + "/".join(params), "ratio": ratio, "noise": noise, "budget": budget,
                     "base_ratio": base_ratio, "new_over": over and not (base_ratio is not None and base_ratio > budget),
                     "already_over": over and base_ratio is not None and base_ratio > budget})
    return pd.DataFrame(rows, columns=["params", "ratio", "noise", "budget", "base_ratio", "new_over", "already_over"])


def summary_markdown(base, head, identity, verdicts: pd.DataFrame, budgets: pd.DataFrame, factor) -> str:
    failing = verdicts[verdicts.verdict.isin(["slower", "failed"])]
    lines = [
        f"## variantbench gate: {head[:8]} against {base[:8]}",
        "",
        f"{identity.get('gpu')}, driver {identity.get('driver')}, CUDA {identity.get('cuda')}, "
        f"torch {identity.get('torch')}, triton {identity.get('triton')}. Regression factor {factor:g}.",
        "",
    ]
    counts = verdicts.verdict.value_counts()
    lines.append("Verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    lines.append("")
    if not failing.empty:
        lines += ["### Slower", "", "| benchmark | params | verdict | ratio | noise (se of log ratio) |", "|---|---|---|---|---|"]
        for r in failing.itertuples():
            ratio = "crashed on HEAD" if pd.isna(r.ratio) else f"{r.ratio:.3f}"
            noise = "-" if pd.isna(r.standard_error) else f"{r.standard_error:.3%}"
            lines.append(f"| {r.benchmark} | {r.params} | {r.verdict} | {ratio} | {noise} |")
        lines.append("")
    over = budgets[budgets.new_over]
    if not over.empty:
        lines += ["### Newly over the signal budget", "", "| case | ratio to baseline | noise | budget |", "|---|---|---|---|"]
        lines += [f"| {r.params} | {r.ratio:.3f} | {r.noise or 0:.1%} | {r.budget:g} |" for r in over.itertuples()]
        lines.append("")
    already = budgets[budgets.already_over]
    if not already.empty:
        lines.append(f"Already over budget on BASE (reported, not failed): {', '.join(already.params)}.")
        lines.append("")
    noisy = verdicts[verdicts.verdict == "noisy"]
    if not noisy.empty:
        lines.append(f"Too noisy to gate at this factor ({len(noisy)}): " + ", ".join(
            f"{r.benchmark} {r.params}" for r in noisy.itertuples()) + ".")
        lines.append("")
    if "confirmation" in verdicts:
        unconfirmed = verdicts[verdicts.confirmation == "not confirmed by re-run"]
        if not unconfirmed.empty:
            lines.append("Suspects the confirming re-run cleared: " + ", ".join(
                f"{r.benchmark} {r.params}" for r in unconfirmed.itertuples()) + ".")
            lines.append("")
    measured = verdicts[verdicts.standard_error.notna()]
    if not measured.empty:
        # Every benchmark's noise, so an A/A run shows what the gate can resolve and what it cannot.
        lines += [f"<details><summary>Noise of all {len(measured)} compared benchmarks</summary>", "",
                  "| benchmark | params | verdict | ratio | noise (se of log ratio) |", "|---|---|---|---|---|"]
        lines += [f"| {r.benchmark} | {r.params} | {r.verdict} | {r.ratio:.3f} | {r.standard_error:.2%} |"
                  for r in measured.itertuples()]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _benchmark_side(frame, benchmark, params):
    match = frame[(frame.benchmark == benchmark) & (frame.params == params)]
    return None if match.empty else _side(match.iloc[0])


def bisect(results_dir: Path, commits: list[str], pattern: str, factor: float) -> dict:
    """The first commit of `commits` (oldest first; commits[0] is GOOD, commits[-1] is BAD) whose
    recorded results make a benchmark matching `pattern` slower than on GOOD.

    `pattern` is searched in `benchmark(variant, implementation, shape)` with the parameters
    unquoted, exactly as `variantbench bisect` prints a benchmark (asv's own --bench form quotes them).
    A benchmark that failed on a commit (asv recorded null: a crash or a mismatch) is slower there;
    one skipped there (NaN: NotImplementedError, e.g. unsupported at that commit) is not.
    Only commits with results on GOOD's machine identity take part; the slowdown must show at BAD.
    Binary search over them (a slowdown, once in, is assumed to stay); commits without results
    between the last good and the first slow one are returned as `unmeasured`.
    Raises Incomparable when GOOD or BAD has no results or BAD is not slower."""
    import re

    good_rows, good_identity = commit_results(results_dir, commits[0])
    keys = [(b, p) for b, p in zip(good_rows.benchmark, good_rows.params)
            if ".time_" in b and re.search(pattern, f"{b}({', '.join(p)})")]
    if not keys:
        raise Incomparable(f"no timing benchmark on {commits[0][:8]} matches {pattern!r}")

    measured = []
    for commit in commits:
        try:
            rows, identity = commit_results(results_dir, commit)
        except Incomparable:
            continue
        if all(identity.get(k) == good_identity.get(k) for k in IDENTITY):
            measured.append((commit, rows))

    def skipped(rows, benchmark, params):
        match = rows[(rows.benchmark == benchmark) & (rows.params == params)]
        return not match.empty and pd.isna(match.iloc[0]["value"]) and not match.iloc[0]["failed"]

    def slower(rows):
        """(benchmark, params, ratio) of the first matching benchmark that is slower, or None."""
        for benchmark, params in keys:
            if skipped(rows, benchmark, params):
                continue
            c = decide.compare(_benchmark_side(good_rows, benchmark, params), _benchmark_side(rows, benchmark, params),
                               len(keys), factor=factor)
            if c.verdict in ("slower", "failed"):
                return benchmark, params, c.ratio
        return None

    if not measured or measured[-1][0] != commits[-1]:
        raise Incomparable(f"no results for {commits[-1][:8]} on the machine GOOD was measured on")
    if slower(measured[-1][1]) is None:
        raise Incomparable(f"{commits[-1][:8]} is not slower than {commits[0][:8]} on {pattern!r}")
    lo, hi = 0, len(measured) - 1  # measured[lo] not slower (GOOD itself), measured[hi] slower
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if slower(measured[mid][1]) is None:
            lo = mid
        else:
            hi = mid
    first, last_good = measured[hi][0], measured[lo][0]
    between = commits[commits.index(last_good) + 1:commits.index(first)]
    benchmark, params, ratio = slower(measured[hi][1])
    return {"first_slower": first, "last_good": last_good, "unmeasured": between,
            "benchmark": benchmark, "params": params, "ratio": ratio}
