"""compare and gate over recorded results: verdicts per benchmark, the signal budget, a Markdown summary.

Results of BASE and HEAD are compared only when measured on the same GPU, as many of them, with the
same driver, CUDA, cuDNN, NCCL, torch and triton: anything else is "incomparable" (exit 3), never a
pass. A commit measured on several machines is compared on one of them (`--machine`).

Each timed benchmark's power state (the SM clock over its samples, the throttle reasons) is reported
beside its verdict and never changes it: the clock is a lead, the samples decide.
"""

import functools
import math
import operator
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from variantbench import decide, figures, power, results

IDENTITY = results.IDENTITY_KEYS  # one list: what makes two measurements comparable
# the summary's line naming the suspects a confirming re-run cleared (tools/gate_drift.py reads it back)
CLEARED_LINE = "Suspects the confirming re-run cleared: "
# A compute-bound kernel's time scales about with its SM clock: clocks 3% apart move a ratio by about
# a third of the 1.10 factor. Clocks at the power cap vary that much and more: on the H200 at 7ed2c48a
# the SDPA forwards ran at 1740-1764 MHz, Flex's and ours at 1855-1977 (variantbench.power).
CLOCK_TOLERANCE = 0.03


class Incomparable(Exception):
    """BASE and HEAD cannot be compared (different hardware or software, or one has no results)."""


class NoResults(Incomparable):
    """A commit has no results (on the machine asked for): measure it first, or exit 3."""


@dataclass(frozen=True)
class Settings:
    regression_factor: float = 1.10
    budget: float = 1.10
    family_budget: dict = field(default_factory=dict)  # family -> budget
    variant_budget: dict = field(default_factory=dict)  # "family/variant" -> budget

    def budget_for(self, family, variant):
        # A plug-in's variant is recorded as `name@plugin-hash` (variantbench.plugins); its budget is
        # set by the name a user types.
        variant = variant.split("@", 1)[0]
        return self.variant_budget.get(f"{family}/{variant}", self.family_budget.get(family, self.budget))


def _settings_table(pyproject: Path) -> dict:
    try:
        return tomllib.loads(pyproject.read_text()).get("tool", {}).get("variantbench", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise results.BadResults(f"{pyproject}: unreadable settings ({error})") from None


def load_settings(pyproject: Path, project: Path | None = None, factor: float | None = None) -> Settings:
    """[tool.variantbench] of pyproject.toml: regression_factor, budget, and per family / variant
    budgets in [tool.variantbench.budgets] as `attention = 1.2` or `"attention/alibi" = 1.5`.

    `project` (default: pyproject.toml of the working directory, where there is one) is the user's
    own project: what it sets overrides `pyproject` (the package's own, the defaults), budget by
    budget, so a researcher sets a plug-in variant's budget beside the plug-in. `factor` (a command's
    --factor) overrides both's regression_factor."""
    table = _settings_table(pyproject)
    project = Path.cwd() / "pyproject.toml" if project is None else project
    if project.is_file() and project.resolve() != Path(pyproject).resolve():
        own = _settings_table(project)
        table = {**table, **own, "budgets": {**table.get("budgets", {}), **own.get("budgets", {})}}
    budgets = table.get("budgets", {})
    return Settings(
        regression_factor=float(factor or table.get("regression_factor", 1.10)),
        budget=float(table.get("budget", 1.10)),
        family_budget={k: float(v) for k, v in budgets.items() if "/" not in k},
        variant_budget={k: float(v) for k, v in budgets.items() if "/" in k},
    )


def _result_files(results_dir: Path, commit: str, machine: str | None = None) -> list[Path]:
    return [p for p in Path(results_dir).glob(f"{machine or '*'}/{commit[:8]}*.json") if p.name != "machine.json"]


def shared_machine(results_dir: Path, commits) -> str | None:
    """The machine to compare `commits` on where --machine names none: the one machine with results
    for every commit. None where no machine has them all (each commit's own results are then read, and
    the identity check decides); Incomparable, naming them, where several have."""
    found = [{p.parent.name for p in _result_files(results_dir, commit)} for commit in commits]
    shared = sorted(set.intersection(*found))
    if len(shared) > 1:
        raise Incomparable(f"{' and '.join(c[:8] for c in commits)} have results on several machines "
                           f"({', '.join(shared)}): pass --machine NAME")
    return shared[0] if shared else None


def commit_results(results_dir: Path, commit: str, machine: str | None = None) -> tuple[pd.DataFrame, dict]:
    """(rows, identity) of one commit's results on `machine`, or on the one machine that has them
    where machine is None. Raises NoResults if there are none, Incomparable if several machines
    have them and none is named, or if one machine's files differ in identity."""
    paths = _result_files(results_dir, commit, machine)
    if not paths:
        raise NoResults(f"no results for {commit} under {results_dir}" + (f" on {machine}" if machine else ""))
    machines = sorted({p.parent.name for p in paths})
    if len(machines) > 1:
        raise Incomparable(f"{commit[:8]} has results on several machines ({', '.join(machines)}): "
                           "pass --machine NAME")
    frames, identities = [], {}
    for path in paths:
        frame, identities[path] = results.load_with_identity(path)
        frames.append(frame)
    distinct = {tuple(sorted(i.items())) for i in identities.values()}
    if len(distinct) > 1:
        raise Incomparable(f"results for {commit} come from different machines: {sorted(distinct)}")
    return pd.concat(frames, ignore_index=True), next(iter(identities.values()))


def _differences(a, b):
    """The identity keys both sides know and disagree on. A key one side lacks is unknown, not
    different: files recorded before cudnn and nccl joined the identity have neither."""
    return [f"{k}: {a.get(k)} vs {b.get(k)}" for k in IDENTITY
            if a.get(k) is not None and b.get(k) is not None and a.get(k) != b.get(k)]


def check_identity(base_identity, head_identity) -> tuple[dict, list[str]]:
    """(the identity BASE and HEAD share, a note per side that lacks some keys). Raises Incomparable
    where they differ in a value both know."""
    differ = _differences(base_identity, head_identity)
    if differ:
        raise Incomparable("BASE and HEAD were measured on different hardware or software (" + "; ".join(differ) + ")")
    unknown = {}  # the keys a side lacks -> the sides lacking them
    for side, identity in (("BASE", base_identity), ("HEAD", head_identity)):
        unknown.setdefault(tuple(k for k in IDENTITY if identity.get(k) is None), []).append(f"{side}'s")
    notes = [f"{' and '.join(sides)} results do not record {', '.join(keys)} (measured before they were part of the "
             "machine's identity): unknown, so not checked." for keys, sides in unknown.items() if keys]
    shared = {k: v for identity in (base_identity, head_identity) for k, v in identity.items() if v is not None}
    return shared, notes


def _skipped(row):
    """asv recorded NaN (the setup raised NotImplementedError: it cannot run there), not null (it failed)."""
    return pd.isna(row["value"]) and not row["failed"]


def _side(row):
    if row is None:
        return None
    value = row["value"]
    return {"value": None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value),
            "samples": row["samples"], "q25": row["q25"], "q75": row["q75"], "repeat": row["repeat"]}


def compare_frames(base: pd.DataFrame, head: pd.DataFrame, factor: float, calibration=None,
                   screen: bool = False) -> pd.DataFrame:
    """One row per timing benchmark (time_*) and parameter set found on either side: ratio,
    standard error, z and verdict (faster, slower, same, noisy, new, gone, failed, skipped), and the
    mean SM clock over each side's samples (base_mhz, head_mhz: NaN where none was read).
    Skipped on HEAD (NaN) is "skipped" whatever BASE did; failed on HEAD (null) where BASE ran, "failed"."""
    def timing(frame):
        return {(r.benchmark, r.params): r._asdict() for r in frame[frame.benchmark.str.contains(r"\.time_")].itertuples()}

    def clocks(frame):
        tracked = frame[frame.benchmark.str.endswith("Power.track_sm_clock_mhz")]  # forward and forward+backward
        return dict(zip(zip(tracked.benchmark, tracked.params), tracked.value.astype(float)))

    base_rows, head_rows = timing(base), timing(head)
    base_mhz, head_mhz = clocks(base), clocks(head)
    keys = sorted(set(base_rows) | set(head_rows), key=str)
    n = sum(1 for k in keys if k in base_rows and k in head_rows)
    rows = []
    for key in keys:
        between = calibration.get(*key) if calibration else None  # noise.Noise or None
        if key in head_rows and _skipped(head_rows[key]):
            c = decide.Comparison("skipped", None, None, None)
        else:
            c = decide.compare(_side(base_rows.get(key)), _side(head_rows.get(key)), n, factor=factor,
                               between_run_sigma=between.sigma if between else None, screen=screen)
        clock = (figures.power_benchmark(key[0]), key[1])
        rows.append({"benchmark": key[0], "params": "/".join(key[1]), "verdict": c.verdict, "ratio": c.ratio,
                     "standard_error": c.standard_error, "z": c.z, "base_mhz": base_mhz.get(clock, math.nan),
                     "head_mhz": head_mhz.get(clock, math.nan),
                     "between_run_sigma": between.sigma if between else math.nan,
                     "aa_pairs": between.pairs if between else 0, "sigma_scope": between.scope if between else ""})
    return pd.DataFrame(rows, columns=["benchmark", "params", "verdict", "ratio", "standard_error", "z",
                                       "base_mhz", "head_mhz", "between_run_sigma", "aa_pairs", "sigma_scope"])


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
        sigma = row.get("between_run_sigma", math.nan)
        c = decide.confirm(*sides, n, factor=factor, between_run_sigma=None if pd.isna(sigma) else sigma)
        verdicts.loc[i, ["verdict", "ratio", "standard_error", "z"]] = [
            c.verdict if c.verdict in ("slower", "noisy") else "same", c.ratio, c.standard_error, c.z]
        verdicts.loc[i, "confirmation"] = "confirmed by re-run" if c.verdict == "slower" else "not confirmed by re-run"
    return verdicts


def throttle_mask(rows: pd.DataFrame) -> int | None:
    """Every NVML throttle reason seen over one commit's timed samples (bits OR-ed); None where no
    power state was recorded."""
    masks = rows.value[rows.benchmark.str.endswith("Power.track_throttle_reasons")].dropna()
    return None if masks.empty else functools.reduce(operator.or_, masks.astype(int), 0)


def power_notes(verdicts: pd.DataFrame, base_rows: pd.DataFrame, head_rows: pd.DataFrame) -> list[str]:
    """The gate summary's lines on the power state (reported, never deciding): benchmarks whose BASE
    and HEAD SM clocks are more than CLOCK_TOLERANCE apart, the throttle reasons seen on each side,
    or that a side has no power readings."""
    unread = [side for side, column in (("BASE", "base_mhz"), ("HEAD", "head_mhz")) if verdicts[column].isna().all()]
    lines = []
    if unread:
        lines.append(f"No power readings{'' if len(unread) == 2 else ' on ' + unread[0]} (results from before they "
                     "were recorded, or the CPU): the clocks are unknown.")
    apart = verdicts[(verdicts.head_mhz / verdicts.base_mhz - 1).abs() > CLOCK_TOLERANCE]
    if not apart.empty:
        lines.append(f"**Power state differs:** BASE and HEAD ran at SM clocks more than {CLOCK_TOLERANCE:.0%} apart in "
                     f"{len(apart)} benchmark(s); a slowdown there may be the power state, not the code: " + ", ".join(
                         f"{r.benchmark} {r.params} ({_clocks(r)})" for r in apart.itertuples()) + ".")
    seen = [(side, throttle_mask(rows)) for side, rows in (("BASE", base_rows), ("HEAD", head_rows))]
    seen = [f"{side} {', '.join(power.reason_names(mask)) or 'none'}" for side, mask in seen if mask is not None]
    if seen:
        lines.append("Throttle reasons seen: " + "; ".join(seen) + ".")
    return lines


def _clocks(r):
    def mhz(value):
        return "-" if pd.isna(value) else f"{value:.0f}"

    return f"{mhz(r.base_mhz)} → {mhz(r.head_mhz)} MHz"


def summary_markdown(base, head, identity, verdicts: pd.DataFrame, budget_lines, factor, notes=(),
                     power_lines=()) -> str:
    """`budget_lines`: variantbench.budget.gate_markdown; `notes`: on the identity (check_identity);
    `power_lines`: power_notes."""
    failing = verdicts[verdicts.verdict.isin(["slower", "failed"])]
    known = {k: identity.get(k) or "unknown" for k in IDENTITY + ("machine",)}
    lines = [
        f"## variantbench gate: {head[:8]} against {base[:8]}",
        "",
        f"{known['machine']}: {known['gpu']}, driver {known['driver']}, CUDA {known['cuda']}, cuDNN {known['cudnn']}, "
        f"NCCL {known['nccl']}, torch {known['torch']}, triton {known['triton']}. Regression factor {factor:g}.",
        "",
    ]
    if notes:
        lines += [f"Note: {note}" for note in notes] + [""]
    lines += budget_lines
    counts = verdicts.verdict.value_counts()
    lines.append("Regression verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    lines.append("")
    if not failing.empty:
        lines += ["### Slower", "", "| benchmark | params | verdict | ratio | noise (se of log ratio) | SM clock BASE → HEAD |",
                  "|---|---|---|---|---|---|"]
        for r in failing.itertuples():
            ratio = "crashed on HEAD" if pd.isna(r.ratio) else f"{r.ratio:.3f}"
            noise = "-" if pd.isna(r.standard_error) else f"{r.standard_error:.3%}"
            lines.append(f"| {r.benchmark} | {r.params} | {r.verdict} | {ratio} | {noise} | {_clocks(r)} |")
        lines.append("")
    if power_lines:
        lines += [*power_lines, ""]
    noisy = verdicts[verdicts.verdict == "noisy"]
    if not noisy.empty:
        lines.append(f"Too noisy to gate at this factor ({len(noisy)}): " + ", ".join(
            f"{r.benchmark} {r.params}" for r in noisy.itertuples()) + ".")
        lines.append("")
    if "confirmation" in verdicts:
        unconfirmed = verdicts[verdicts.confirmation == "not confirmed by re-run"]
        if not unconfirmed.empty:
            lines.append(CLEARED_LINE + ", ".join(
                f"{r.benchmark} {r.params}" for r in unconfirmed.itertuples()) + ".")
            lines.append("")
    measured = verdicts[verdicts.standard_error.notna()]
    if not measured.empty:
        # Every benchmark's noise, so an A/A run shows what the gate can resolve and what it cannot.
        lines += [f"<details><summary>Noise of all {len(measured)} compared benchmarks</summary>", "",
                  "| benchmark | params | verdict | ratio | noise (se of log ratio) | between-run sigma (A/A pairs) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r.benchmark} | {r.params} | {r.verdict} | {r.ratio:.3f} | {r.standard_error:.2%} | "
                  + (f"{r.between_run_sigma:.2%} ({r.aa_pairs}, {r.sigma_scope}) |" if r.aa_pairs else "none |")
                  for r in measured.itertuples()]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _benchmark_side(frame, benchmark, params):
    match = frame[(frame.benchmark == benchmark) & (frame.params == params)]
    return None if match.empty else _side(match.iloc[0])


def bisect(results_dir: Path, commits: list[str], pattern: str, factor: float, machine: str | None = None) -> dict:
    """The first commit of `commits` (oldest first; commits[0] is GOOD, commits[-1] is BAD) whose
    recorded results make a benchmark matching `pattern` slower than on GOOD.

    `pattern` is searched in `benchmark(variant, implementation, shape)` with the parameters
    unquoted, exactly as `variantbench bisect` prints a benchmark (asv's own --bench form quotes them).
    A benchmark that failed on a commit (asv recorded null: a crash or a mismatch) is slower there;
    one skipped there (NaN: NotImplementedError, e.g. unsupported at that commit) is not.
    Only commits with results on `machine` (None: each commit's one machine) of GOOD's identity take
    part; the slowdown must show at BAD.
    Binary search over them (a slowdown, once in, is assumed to stay); commits without results
    between the last good and the first slow one are returned as `unmeasured`.
    Raises Incomparable when GOOD or BAD has no results or BAD is not slower."""
    import re

    good_rows, good_identity = commit_results(results_dir, commits[0], machine)
    keys = [(b, p) for b, p in zip(good_rows.benchmark, good_rows.params)
            if ".time_" in b and re.search(pattern, f"{b}({', '.join(p)})")]
    if not keys:
        raise Incomparable(f"no timing benchmark on {commits[0][:8]} matches {pattern!r}")

    measured = []
    for commit in commits:
        try:
            rows, identity = commit_results(results_dir, commit, machine)
        except Incomparable:
            continue
        if not _differences(identity, good_identity):
            measured.append((commit, rows))

    def skipped(rows, benchmark, params):
        match = rows[(rows.benchmark == benchmark) & (rows.params == params)]
        return not match.empty and _skipped(match.iloc[0])

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
