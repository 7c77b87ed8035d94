"""Running asv so that a killed run loses at most the benchmark in flight and no file is half-written.

asv keeps every result of a run in memory and writes the results file once, at the end, with a plain
open(path, "w"): a run killed after an hour loses the hour, and one killed while writing leaves a torn
file. So `variantbench run` runs asv one benchmark at a time against a staging results folder (asv
merges each benchmark's results into the commit's staged file), checks the staged file after each,
and publishes it into the real results folder by write-to-temporary-then-rename. The derived `track_`
figures share one invocation (see `chunks`).

A run stopped by SIGTERM (a CI timeout, `kill`) or Ctrl-C stops asv and every benchmark process it
started, and removes its staging folder: nothing of it is left behind but what was published.
"""

import contextlib
import importlib
import inspect
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from variantbench import results


def _suite_classes(root: Path):
    """(module stem, class name, class) of every class the suite's modules define. Imports the suite
    modules, which touch no GPU at import."""
    import sys

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    for module_path in sorted((root / "suite").glob("bench_*.py")):
        module = importlib.import_module(f"suite.{module_path.stem}")
        for class_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                yield module_path.stem, class_name, cls


def _methods(cls, prefixes):
    # as asv: a benchmark is a method; a subclass sets an inherited one to None to drop it
    return [attr for attr in dir(cls) if attr.startswith(prefixes) and callable(getattr(cls, attr))]


def suite_benchmarks(root: Path) -> list[str]:
    """asv names (`bench_attention.AttentionForward.time_forward`) of every benchmark of the suite,
    in asv's order."""
    return sorted(f"{stem}.{class_name}.{attr}" for stem, class_name, cls in _suite_classes(root)
                  for attr in _methods(cls, ("time_", "track_")))


def record_tracks(root: Path, selected) -> list[str]:
    """The tracks that read what the selected timed benchmarks' processes recorded (their power state,
    their timing mode: suite.common.ProcessRecordBenchmark). They time nothing, and without them a
    `--bench` selection of timings alone leaves the gate unable to tell a throttled clock from a
    slower kernel (session 19's MoE gates: 'No power readings')."""
    from suite.common import ProcessRecordBenchmark

    timed = {(name.split(".")[0], name.rsplit(".time_", 1)[1]) for name in selected if ".time_" in name}
    return sorted(f"{stem}.{class_name}.{attr}" for stem, class_name, cls in _suite_classes(root)
                  if issubclass(cls, ProcessRecordBenchmark) and (stem, cls.timed) in timed
                  for attr in _methods(cls, ("track_",)))


def publish(staged: Path, target: Path):
    """Copy a staged file over its target atomically; a staged file asv left unreadable is not
    published (the target keeps its last complete version) and BadResults says which.

    A results file is joined with its target as the target is now, under a lock on the folder: runs
    of one commit on one machine at once (lanes of one GPU host, shards sharing a folder) each staged a
    copy of the file as it was when they started, and the last to publish dropped what the others had
    published since (86c9ee3's block forwards on an H200, published while its default tier ran)."""
    if staged.name in ("machine.json", "benchmarks.json"):
        json.loads(staged.read_text())
        _replace(staged.read_bytes(), target)
        return
    results.load_file(staged)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent):
        data = json.loads(staged.read_text())
        try:
            data = newest_of(json.loads(target.read_text()), data)
        except (OSError, ValueError):  # no target yet, or a damaged one: the staged file replaces it
            pass
        _replace(json.dumps(data).encode(), target)


def newest_of(current: dict, staged: dict) -> dict:
    """The staged results with every benchmark of `current` it lacks, and of those both hold, each
    parameter combination's figures from the run that measured it last (asv's started_at, per
    benchmark). Files of another commit or layout are not joined: staged wins.

    Per combination, not per benchmark: asv's entry for a parameterised benchmark holds its whole
    grid, the combinations a run skipped as nulls. Lanes running one benchmark over different
    parameters (57a9be4's default tier timed llama-3-8b's block forward while another lane timed all
    nine recipes) each publish the benchmark; whole entries let the later one null the other's eight."""
    if any(current.get(key) != staged.get(key) for key in ("commit_hash", "result_columns")):
        return staged
    columns = staged["result_columns"]
    started = columns.index("started_at") if "started_at" in columns else None
    joined = dict(current["results"])
    for name, entry in staged["results"].items():
        mine = joined.get(name)
        if mine is None:
            joined[name] = entry
        elif started is None or _at(entry, started) >= _at(mine, started):
            joined[name] = _combined(mine, entry, columns)
        else:
            joined[name] = _combined(entry, mine, columns)
    return {**staged, "results": joined, "durations": {**current.get("durations", {}), **staged.get("durations", {})}}


def _at(entry, index):
    return (entry[index] if index < len(entry) else None) or 0


def _combined(older: list, newer: list, columns: list) -> list:
    """One benchmark's entry from two runs' entries: a combination's figures (result, stats, samples:
    asv's lists over the grid) from `newer` where it measured them, else from `older`; everything
    else (version, started_at, duration, profile) from `newer`. Grids of one parameter count join
    value by value; otherwise the benchmark's parameters changed and `newer` stands alone."""
    older, newer = ([*entry, *[None] * (len(columns) - len(entry))] for entry in (older, newer))
    at = {column: i for i, column in enumerate(columns)}
    if "result" not in at or "params" not in at:
        return newer
    old_grid, new_grid = older[at["params"]] or [], newer[at["params"]] or []
    if len(old_grid) != len(new_grid):
        return newer
    grid = [list(dict.fromkeys([*new_values, *old_values])) for new_values, old_values in zip(new_grid, old_grid)]
    old_index, new_index = _positions(old_grid), _positions(new_grid)
    per_combination = [i for column, i in at.items() if column in ("result", "samples") or column.startswith("stats_")]
    merged = list(newer)
    merged[at["params"]] = grid
    for i in per_combination:
        merged[i] = []
    for combination in itertools.product(*grid):
        new_i, old_i = new_index.get(combination), old_index.get(combination)
        if _measured(newer, new_i, at["result"]) or (new_i is not None and not _measured(older, old_i, at["result"])):
            source, index = newer, new_i
        else:
            source, index = older, old_i
        for i in per_combination:
            values = source[i]
            merged[i].append(values[index] if values is not None and index is not None else None)
    for i in per_combination:
        if all(value is None for value in merged[i]):
            merged[i] = None
    return merged


def _positions(grid) -> dict:
    return {combination: i for i, combination in enumerate(itertools.product(*grid))}


def _measured(entry, index, result_at) -> bool:
    """A number (not asv's null for failed, nor NaN for skipped) at that combination."""
    if index is None or entry[result_at] is None:
        return False
    value = entry[result_at][index]
    return value is not None and value == value


@contextlib.contextmanager
def _locked(folder: Path):
    """An exclusive flock on the folder itself (no lock file left in the results)."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _replace(content: bytes, target: Path):
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)  # a kill between the write and the rename


def staged_conf(root: Path, staging: Path) -> Path:
    conf = json.loads((root / "asv.conf.json").read_text())
    # html too: `asv run` writes none, but nothing of a run may land in the checkout
    conf.update(repo=str(root), benchmark_dir=str(root / "suite"), results_dir=str(staging),
                html_dir=str(staging / "html"))
    path = staging / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def chunks(benchmarks):
    """asv invocations, in order: one per timed benchmark (a `time_` method over its whole grid), then
    one for every `track_` benchmark. Each invocation costs about 11 s of asv start, discovery and
    forkserver imports on an H100 host (the gaps between benchmarks in fcd31493's results), while a
    track benchmark reads the metrics its forward's process left in the run's memos in about 0.3 s a
    case. So the tracks go in one invocation, not one per class (8 invocations fewer for attention, MoE
    and collectives, ~90 s of a default run), and a kill during them loses only figures derived from
    the timed ones, which a re-run derives again; a kill anywhere else loses one timed benchmark."""
    timed = [[name] for name in benchmarks if name.rsplit(".", 1)[1].startswith("time_")]
    tracks = [name for name in benchmarks if name.rsplit(".", 1)[1].startswith("track_")]
    return timed + ([tracks] if tracks else [])


@contextlib.contextmanager
def exit_on_sigterm():
    """Within: SIGTERM raises SystemExit(143) instead of ending the process where it stands, so
    `finally` blocks and context managers clean up as they do on Ctrl-C. Python's handlers run only
    on the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_group(process, grace_s=10.0):
    """End a child started with start_new_session and every process of its group (asv's benchmark
    processes: an orphaned one would hold the GPU until its 600 s timeout): SIGTERM, SIGKILL after
    `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace_s)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)


def run_staged(root, results_dir, machine, sha, asv_args, benchmarks, env, follow):
    """Run each chunk of benchmarks in its own asv invocation and publish after each. Returns (exit
    code of the worst invocation, path of the published results file or None).

    `follow(process)` waits for an invocation and returns its exit code. asv runs in a session of
    its own, so a kill of this process (SIGTERM, Ctrl-C) stops it and its benchmark processes here,
    and the staging folder is removed, rather than either outliving the run."""
    results_dir = Path(results_dir)
    with exit_on_sigterm(), tempfile.TemporaryDirectory(prefix="variantbench-staging-") as staging_name:
        staging = Path(staging_name)
        existing = results.results_file(results_dir, machine, sha)
        if existing is not None:  # a re-run of this commit adds to what is there
            (staging / machine).mkdir(parents=True)
            shutil.copyfile(existing, staging / machine / existing.name)
        conf = staged_conf(root, staging)
        worst, published = 0, None
        for chunk in chunks(benchmarks):
            # asv matches a parameterised benchmark as `name(p0, p1, ...)`
            regex = "|".join(rf"^{re.escape(name)}(\(|$)" for name in chunk)
            cmd = ["asv", "--config", str(conf), "run", *asv_args, "--bench", regex]
            process = subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True)
            try:
                code = follow(process)
            finally:
                stop_group(process)  # asv's own processes end with it; after a kill, stop them all
            worst = max(worst, code)
            for staged in sorted(staging.glob("*/*.json")) + sorted(staging.glob("benchmarks.json")):
                target = results_dir / staged.relative_to(staging)
                try:
                    publish(staged, target)
                except results.BadResults:
                    worst = max(worst, 2)
                    continue
                if staged.name not in ("machine.json", "benchmarks.json"):
                    published = target
        if describe_whole_grid(root, conf, asv_args, env, staging):
            publish(staging / "benchmarks.json", results_dir / "benchmarks.json")
    return worst, published


def describe_whole_grid(root, conf, asv_args, env, staging):
    """Rewrite the staged benchmarks.json from a discovery of this device's whole grid (the full tier,
    no shard filters). asv writes there the grid its run discovered, a tier's or a shard's, and `asv
    publish` draws only parameters listed in it: one sharded run would hide every other shard's
    history. A `--bench` that selects nothing makes asv discover and describe, and run nothing (it
    exits 1 for that, which says nothing here). True where it wrote a readable description."""
    whole = dict(env, VARIANTBENCH_TIER="full", VARIANTBENCH_SHAPES="", VARIANTBENCH_VARIANTS="",
                 VARIANTBENCH_IMPLEMENTATIONS="")
    described = staging / "benchmarks.json"
    before = described.stat().st_mtime_ns if described.exists() else None
    process = subprocess.Popen(["asv", "--config", str(conf), "run", *asv_args, "--bench", "^$"], cwd=root, env=whole,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait()
    finally:
        stop_group(process)
    try:  # a description that failed keeps the run's own, already published
        json.loads(described.read_text())
    except (OSError, ValueError):
        return False
    return described.stat().st_mtime_ns != before
