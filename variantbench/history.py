"""The history: which recorded results form one comparable history over commits, the forward times
along it, and which of its steps are regressions.

asv draws a result in its graphs only where the version recorded for its benchmark equals the one in
the suite's benchmarks.json. Until 1bbe9ca that version was a hash of the benchmark's source (64
hex digits), so every edit of suite/ hid all earlier results: the H100 time_forward graphs showed
2 of 13 commits. Since then the suite declares `version = "1"` (suite/common.py), bumped only when
what a benchmark measures changes. `migrate` rewrites the hash recorded by older results to the
suite's version, per benchmark, only where the result measures what version "1" means, judged by
the commit it was measured at (git ancestry; SINCE below):

- time_forward, time_forward_backward: from 84901ab on, where each asv sample became a batch of
  calls of at least 20 ms with the timer divided by the batch. Before it (e64b5e2, fbc3c4e, 125b362)
  a sample was one synchronised call, 8-14% above do_bench (reports/README.md): those keep their
  hash and stay out of the history.
- the track figures derived from timed calls (TFLOP/s, GB/s, % of roofline, ratio to baseline and
  its noise, speedup over the reference): from b5fd3dc on, where the interleaved rounds also time a
  batch (one synchronised 1 ms call read 8% slow on an H100). 84901ab and earlier keep their hash.
- track_max_error, track_peak_memory: every commit. They time nothing: the float64 check and CUDA's
  peak allocation have measured the same since the first results.
- anything else (a benchmark SINCE does not name, a recorded version that was declared rather than
  hashed, a commit git does not know, a benchmark benchmarks.json no longer lists, or one whose
  suite version is no longer "1": a bump means a new meaning, which no older result has) is left.

`python -m variantbench.history migrate RESULTS_DIR` runs it (`--dry-run` only lists). Run on
reports/results, it gave the H100 graphs 8 commits of attention forward times (84901ab to 2b48713),
5 of forward+backward and 4 of MoE forward (074856b's DeepSeek and Qwen shapes are not in the
default tier's benchmarks.json, so asv draws none of them).

The summary page follows the same rule as asv's graphs: `outside_suite` names the results whose
version is not the suite's, and `forward_rows` leaves them out, so both show one history.
"""

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pandas as pd

from variantbench import decide, results

ROOT = Path(__file__).resolve().parent.parent
TIMER = "84901aba4469f9ec4573d2dccf1c8f555921cd57"  # batched asv samples
METRICS_TIMER = "b5fd3dccb109fc7253340b1c8447616280a8d5f6"  # batched interleaved rounds
VERSION = "1"  # the suite's declared version that SINCE describes
# benchmark method -> the first commit whose results mean what VERSION means (None: every commit)
SINCE = {
    "time_forward": TIMER,
    "time_forward_backward": TIMER,
    "track_tflops": METRICS_TIMER,
    "track_gbps": METRICS_TIMER,
    "track_percent_of_peak": METRICS_TIMER,
    "track_ratio_to_baseline": METRICS_TIMER,
    "track_ratio_noise": METRICS_TIMER,
    "track_speedup_over_reference": METRICS_TIMER,
    "track_max_error": None,
    "track_peak_memory": None,
}
SOURCE_HASH = re.compile(r"[0-9a-f]{64}")  # asv's default version: sha256 of the benchmark's source


@dataclass(frozen=True)
class Decision:
    path: Path
    benchmark: str
    recorded: str
    suite: str | None
    why: str  # "migrated", or why the result keeps its version

    @property
    def migrated(self):
        return self.why == "migrated"


def _json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise results.BadResults(f"{path}: not readable JSON ({error})") from None


def suite_versions(results_dir: Path) -> dict:
    """{benchmark: version} of the suite's benchmarks.json in results_dir (what asv publishes)."""
    listing = _json(Path(results_dir) / "benchmarks.json")
    return {name: entry["version"] for name, entry in listing.items() if isinstance(entry, dict)}


def _result_files(results_dir: Path):
    return [p for p in sorted(Path(results_dir).glob("*/*.json")) if p.name != "machine.json"]


def _read(path: Path):
    """(commit, machine, {benchmark: (entry, index of its version)}) of one asv results file."""
    data = _json(path)
    try:
        index = data["result_columns"].index("version")
        recorded = {name: (entry, index) for name, entry in data["results"].items() if len(entry) > index}
        return data, data["commit_hash"], data["params"]["machine"], recorded
    except (KeyError, ValueError, TypeError) as error:
        raise results.BadResults(f"{path}: not an asv results file ({type(error).__name__}: {error})") from None


def outside_suite(results_dir: Path) -> set:
    """(machine, commit, benchmark) of every result whose recorded version is not the suite's: asv's
    graphs leave them out. Empty where there is no benchmarks.json (nothing to compare with)."""
    if not (Path(results_dir) / "benchmarks.json").exists():
        return set()
    versions = suite_versions(results_dir)
    outside = set()
    for path in _result_files(results_dir):
        _, commit, machine, recorded = _read(path)
        outside.update((machine, commit, name) for name, (entry, index) in recorded.items()
                       if versions.get(name) != entry[index])
    return outside


def _descends(repo: Path, commit: str, since: str, cache: dict):
    """True if commit is `since` or after it, False if not, None if git knows one of them not."""
    if (commit, since) not in cache:
        done = subprocess.run(["git", "merge-base", "--is-ancestor", since, commit], cwd=repo, capture_output=True)
        cache[commit, since] = {0: True, 1: False}.get(done.returncode)
    return cache[commit, since]


def plan(results_dir: Path, repo: Path = ROOT, since: dict = SINCE) -> list[Decision]:
    """One Decision per recorded result (file, benchmark) whose version is not the suite's."""
    versions = suite_versions(results_dir)
    decisions, cache = [], {}
    for path in _result_files(results_dir):
        _, commit, _, recorded = _read(path)
        for name, (entry, index) in recorded.items():
            recorded, suite = entry[index], versions.get(name)
            if recorded == suite:
                continue
            method = name.rsplit(".", 1)[-1]
            if suite is None:
                why = "not in the suite's benchmarks.json"
            elif suite != VERSION:
                why = f"the suite's version is {suite!r}, not {VERSION!r}: a meaning no older result has"
            elif not (isinstance(recorded, str) and SOURCE_HASH.fullmatch(recorded)):
                why = f"declared version {recorded!r}: a changed meaning, kept apart"
            elif method not in since:
                why = f"no rule for {method}"
            elif since[method] is None:
                why = "migrated"
            else:
                after = _descends(repo, commit, since[method], cache)
                why = {True: "migrated", False: f"measured before {since[method][:7]}",
                       None: "commit or cutoff unknown to git"}[after]
            decisions.append(Decision(path, name, recorded, suite, why))
    return decisions


def migrate(results_dir: Path, repo: Path = ROOT, since: dict = SINCE) -> list[Decision]:
    """Rewrite the versions `plan` marks "migrated", file by file, atomically; every other byte of a
    file is kept (asv writes results as compact JSON, which json.dumps reproduces)."""
    decisions = plan(results_dir, repo, since)
    for path in dict.fromkeys(d.path for d in decisions if d.migrated):
        data, _, _, recorded = _read(path)
        for d in decisions:
            if d.path == path and d.migrated:
                entry, index = recorded[d.benchmark]
                entry[index] = d.suite
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    return decisions


def _known_where_unrecorded(mine: pd.DataFrame, keys) -> pd.DataFrame:
    """Older results lack identity keys added since (cuDNN and NCCL, session 6): a key a file did not
    record is unknown, not different, so it takes the machine's one recorded value where there is
    exactly one (as the gate treats it); with several recorded values it stays apart."""
    mine = mine.copy()
    for key in keys:
        if key not in mine:
            mine[key] = None
        known = mine[key].dropna().unique()
        if len(known) == 1:
            mine[key] = mine[key].fillna(known[0])
    return mine


def histories(frame: pd.DataFrame) -> list[dict]:
    """One history per machine name and identity (results.IDENTITY_KEYS): results recorded under one
    name on two GPU models or software stacks are never one history (the gate calls them
    incomparable). Each: id, title, note (why a name was split, else ""), asv (the identity's asv URL
    parameters where split) and rows."""
    keys = list(results.IDENTITY_KEYS)
    found = []
    for machine in sorted(frame.machine.unique()):
        mine = _known_where_unrecorded(frame[frame.machine == machine], keys)
        groups = sorted(mine.groupby(keys, dropna=False, sort=False).indices.items(),
                        key=lambda group: (text(group[0][0]), mine.date.iloc[group[1]].min()))
        differ = [k for i, k in enumerate(keys) if len({text(g[i]) for g, _ in groups}) > 1]
        note = (f"Results recorded under the machine name {machine} come from {len(groups)} different machines "
                f"({', '.join(differ)} differ): each has its own section, and none is compared with another."
                if differ else "")
        for identity, index in groups:
            named = dict(zip(keys, map(text, identity)))
            title = machine + "".join(f" · {k} {named[k]}" for k in differ)
            found.append({"id": re.sub(r"[^A-Za-z0-9_.-]+", "-", title), "title": title, "note": note,
                          "asv": {k: named[k] for k in differ}, "rows": mine.iloc[index]})
    return found


def text(value):
    """An identity value as shown: asv leaves keys out of older results (gpu_count before c5a6dfb)."""
    return "unknown" if value is None or value != value else str(value)


def forward_rows(section: pd.DataFrame, outside: set = frozenset()) -> pd.DataFrame:
    """The forward times of one machine identity's results, oldest commit first, with a `case`
    column (family/variant/implementation/shape); results outside the suite's versions left out."""
    forward = section[section.benchmark.str.endswith("Forward.time_forward") & (section.params.map(len) >= 3)]
    if outside:
        keep = [(m, c, b) not in outside for m, c, b in zip(forward.machine, forward.commit, forward.benchmark)]
        forward = forward[keep]
    case = [f"{b.split('.')[0].removeprefix('bench_')}/{'/'.join(p[:3])}"
            for b, p in zip(forward.benchmark, forward.params)]
    return forward.assign(case=case).sort_values("date", kind="stable")


def times(rows: pd.DataFrame) -> pd.DataFrame:
    """Forward ms per (commit, case), in commit-date order; NaN where a commit has no figure for a
    case (a gap, a new or removed benchmark, a failure)."""
    if rows.empty:
        return pd.DataFrame()
    ms = pd.to_numeric(rows.value, errors="coerce") * 1e3
    table = rows.assign(ms=ms).pivot_table(index="commit", columns="case", values="ms", aggfunc="first")
    return table.reindex(list(dict.fromkeys(rows.commit)))


def _side(row):
    value = row.value
    return {"value": None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value),
            "samples": row.samples, "q25": row.q25, "q75": row.q75, "repeat": row.repeat}


@dataclass(frozen=True)
class Step:
    case: str
    commit: str
    ratio: float
    verdict: str  # decide.compare's: "slower" is a regression


def steps(rows: pd.DataFrame, factor: float) -> list[Step]:
    """Each case's forward at each commit against the previous commit that measured it, decided as
    the gate decides (decide.compare on the recorded samples, Bonferroni over the cases compared at
    that commit). A history has no re-run to confirm a suspect, so its margin is the confirming
    one (CONFIRM_Z), not the screen's wider one. Only steps with both sides measured are listed."""
    pairs = []
    measured_rows = rows[pd.to_numeric(rows.value, errors="coerce") > 0]  # failures and skips are no step
    for case, measured in measured_rows.groupby("case", sort=False):
        previous = None
        for row in measured.drop_duplicates("commit", keep="last").itertuples():
            if previous is not None:
                pairs.append((case, row.commit, _side(previous), _side(row)))
            previous = row
    per_commit = pd.Series([commit for _, commit, _, _ in pairs]).value_counts().to_dict()
    found = []
    for case, commit, base, head in pairs:
        c = decide.compare(base, head, per_commit[commit], factor=factor, power_z=decide.CONFIRM_Z)
        found.append(Step(case, commit, c.ratio, c.verdict))
    return found


def plot(times: pd.DataFrame, marks: list):
    """matplotlib figure of `times`, each case relative to its first figure, with an x at every
    (case, commit) of `marks`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    x = range(len(times.index))
    first = {case: times[case].dropna().iloc[0] if times[case].notna().any() else float("nan") for case in times}
    for case in times.columns:
        ax.plot(x, times[case] / first[case], marker=".", linewidth=1, label=case if len(times.columns) <= 12 else None)
    for case, commit in marks:
        ax.plot([list(times.index).index(commit)], [times[case][commit] / first[case]], "x", color="#c0392b",
                markersize=10, markeredgewidth=2)
    ax.set_xticks(list(x), [c[:8] for c in times.index], rotation=45, fontsize=7)
    ax.set_ylabel("forward time / first measured")
    ax.set_title(f"{len(times.columns)} forward benchmarks over {len(times.index)} commits; x: regression", fontsize=9)
    if len(times.columns) <= 12:
        ax.legend(fontsize=6)
    return fig


@click.group()
def main():
    """The results history (python -m variantbench.history)."""


@main.command("migrate")
@click.argument("results_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--repo", type=click.Path(path_type=Path, file_okay=False), default=ROOT, show_default=True,
              help="The git checkout whose history orders the commits.")
@click.option("--dry-run", is_flag=True, help="List what would change; write nothing.")
def migrate_command(results_dir, repo, dry_run):
    """Give older results the suite's benchmark versions where they measure the same thing, so asv's
    graphs show the whole comparable history (see this module's docstring for which)."""
    try:
        decisions = (plan if dry_run else migrate)(results_dir, repo)
    except results.BadResults as why:  # exit 2 with one line, as every variantbench command on bad input
        click.echo(f"variantbench: {why}", err=True)
        sys.exit(2)
    for path in dict.fromkeys(d.path for d in decisions):
        mine = [d for d in decisions if d.path == path]
        kept = sorted({f"{d.benchmark.rsplit('.', 1)[-1]}: {d.why}" for d in mine if not d.migrated})
        click.echo(f"{path.relative_to(results_dir)}: {sum(d.migrated for d in mine)} "
                   f"{'to migrate' if dry_run else 'migrated'}, {len(mine) - sum(d.migrated for d in mine)} kept"
                   + (f" ({'; '.join(kept)})" if kept else ""))
    if not decisions:
        click.echo(f"every result under {results_dir} carries the suite's versions")


if __name__ == "__main__":
    main()
