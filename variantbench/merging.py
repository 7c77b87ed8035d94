"""One history from shards: the nightly run splits the suite over a matrix of GPU runners, each
measuring some families of one commit (`variantbench run --family F --results shards/F`); `merge` puts
their asv result files into one results folder, so `asv publish`, report, compare and gate read one
run per commit and machine.

asv keeps one file per (machine, commit, environment), holding every benchmark it ran. Two shards of
a commit on one machine (one GPU model) each write that file, so merging joins their benchmarks. The
shards must be disjoint by benchmark (by family they are: each family has its own suite module): a
benchmark in two shards would be two measurements of one figure, and the merge refuses it rather than
keep either. Files must agree on what they were measured with (asv's machine params: GPU, driver,
CUDA, cuDNN, NCCL, torch, triton) and on the commit. Nothing in the target is replaced until every
shard has been read and joined: a bad shard leaves the results folder as it was.
"""

import json
import shutil
from pathlib import Path

import click

from variantbench import choices
from variantbench.results import IDENTITY_KEYS, BadResults
from variantbench.runner import ROOT, fail

AGREED = ("commit_hash", "env_name", "result_columns", "version")
# Of asv's machine params, what a figure depends on (results.IDENTITY_KEYS and the machine's name);
# two runners of one GPU model differ in host name, core count and memory, and still share a history.
MEASURED_WITH = IDENTITY_KEYS + ("machine",)


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        for key in AGREED + ("results",):
            data[key]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadResults(f"{path}: not a readable asv results file ({type(error).__name__}: {error})") from None
    return data


def joined(into: dict, into_path, more: dict, more_path) -> dict:
    """`into` with `more`'s benchmarks; BadResults where the two disagree on what was measured or
    share a benchmark."""
    for key in AGREED:
        if into[key] != more[key]:
            raise BadResults(f"{more_path} and {into_path} differ in {key}: not one commit's run on one machine")
    for key in MEASURED_WITH:
        if into["params"].get(key) != more["params"].get(key):
            raise BadResults(f"{more_path} and {into_path} differ in params ({key}: {into['params'].get(key)} and "
                             f"{more['params'].get(key)}): not one commit's run on one machine")
    # a shard merged again (a retried job) brings the same entries: not two measurements of one figure
    both = sorted(b for b in set(into["results"]) & set(more["results"]) if into["results"][b] != more["results"][b])
    if both:
        raise BadResults(f"{both[0]} is in both {into_path} and {more_path}: shards must run disjoint benchmarks")
    merged = dict(into)
    merged["results"] = {**into["results"], **more["results"]}
    merged["durations"] = {**more.get("durations", {}), **into.get("durations", {})}
    dates = [d for d in (into.get("date"), more.get("date")) if d is not None]
    merged["date"] = min(dates) if dates else None
    return merged


def _benchmarks(paths) -> dict:
    merged = {}
    for path in paths:
        try:
            merged.update(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise BadResults(f"{path}: not a readable asv benchmarks file ({type(error).__name__})") from None
    return merged


def plan(shards, into: Path) -> dict:
    """{target path: its new contents (a dict to write as JSON)}: every file the merge writes."""
    into = Path(into)
    writes, sources = {}, {}
    benchmark_files = [into / "benchmarks.json"] if (into / "benchmarks.json").exists() else []
    for shard in map(Path, shards):
        if not shard.is_dir():
            raise BadResults(f"{shard}: no such shard folder")
        benchmark_files += [shard / "benchmarks.json"] if (shard / "benchmarks.json").exists() else []
        if not [p for p in shard.glob("*/*.json") if p.name != "machine.json"]:
            # a failed runner's empty artifact, or a path one level too deep (shards/F/<machine>)
            raise BadResults(f"{shard}: no asv result files (<machine>/<commit>-<env>.json) in this shard")
        for machine_file in sorted(shard.glob("*/machine.json")):
            target = into / machine_file.parent.name / "machine.json"
            theirs = _load_machine(machine_file)
            ours = writes.get(target) or (_load_machine(target) if target.exists() else None)
            if ours is not None and ours != theirs:
                raise BadResults(f"{machine_file} describes another machine than {target}")
            writes[target] = theirs
        for path in sorted(shard.glob("*/*.json")):
            if path.name == "machine.json":
                continue
            target = into / path.parent.name / path.name
            data = _load(path)
            if target in writes:
                data = joined(writes[target], sources[target], data, path)
            elif target.exists():
                data = joined(_load(target), target, data, path)
            writes[target], sources[target] = data, path
        for path in sorted(shard.glob(f"*/*{choices.SUFFIX}")):  # which backend each case ran (variantbench.choices)
            target = into / path.parent.name / path.name
            writes[target] = {**(writes.get(target) or choices.read(target)), **choices.read(path)}
    if not writes:
        raise BadResults(f"no asv result files in {', '.join(map(str, shards))}")
    if benchmark_files:
        writes[into / "benchmarks.json"] = _benchmarks(benchmark_files)
    return writes


def _load_machine(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BadResults(f"{path}: not a readable asv machine file ({type(error).__name__})") from None


def merge(shards, into: Path) -> list[Path]:
    """Merge the shards' results into `into`; returns the files written. Each file is written beside
    its target and then moved over it, after every shard was read."""
    writes = plan(shards, into)
    for target, data in writes.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(target.name + ".merging")
        staged.write_text(json.dumps(data, indent=1, sort_keys=True))
        shutil.move(staged, target)
    return sorted(writes)


@click.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--into", type=click.Path(path_type=Path), default=ROOT / "reports" / "results", show_default=True,
              help="The results folder the shards join.")
def merge_command(shards, into):
    """Join the asv results of suite shards (each a `run --results SHARD` of some families of one
    commit, as the nightly matrix of GPU runners writes them) into one results folder: one file per
    commit and machine with every shard's benchmarks. Exits 2, writing nothing, where a shard is
    unreadable, two shards hold one benchmark, or their machines or commits differ."""
    try:
        written = merge(shards, into)
    except BadResults as why:
        fail(str(why))
    except OSError as why:
        fail(f"cannot write under {into}: {why.strerror or why}")
    click.echo(f"merged {len(shards)} shard(s) into {into}: {len(written)} file(s) written")
