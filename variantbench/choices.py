"""What each timed case ran through, kept beside its asv results: SDPA's backend, fused's pieces
("attention sdpa, mlp cublas"), a tuned plan; the `backend` its check names. asv records numbers
only, and a block that got slower because fused picked another piece, or SDPA another backend, says
so nowhere else once the run's memos are gone.

`variantbench run` gathers them from the run's metrics memos into <machine>/<results file's
stem>.choices (JSON, {case: backend}; not .json, which asv and the shard merge read as results),
joined with what earlier runs of the commit on that machine recorded there (lanes, shards)."""

import json
from pathlib import Path

import click

from variantbench.results import BadResults

SUFFIX = ".choices"


def gather(run_dir) -> dict:
    """{case name: backend} from a run's metrics memos (variantbench.metrics.memo_path), those that name one."""
    chosen = {}
    for memo in sorted(Path(run_dir).glob("metrics-*.json")):
        try:
            record = json.loads(memo.read_text())
        except (OSError, ValueError):  # a memo cut by a crash: its case is timed, its choice unknown
            continue
        if isinstance(record, dict) and record.get("case") and record.get("sdpa_backend"):
            chosen[record["case"]] = record["sdpa_backend"]
    return chosen


def path_for(results_file) -> Path:
    results_file = Path(results_file)
    return results_file.with_name(results_file.stem + SUFFIX)


def read(path) -> dict:
    """The choices recorded at `path`, {} where there are none; BadResults where the file is there but
    not a JSON object (the shard merge then refuses it, one line, writing nothing)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BadResults(f"{path}: not readable as choices ({type(error).__name__})") from None
    if not isinstance(recorded, dict):
        raise BadResults(f"{path}: not a JSON object of case: backend")
    return recorded


def recorded(results_dir) -> dict:
    """{(machine, commit's first 8 hex digits): {case: backend}} of every choices file under
    results_dir (asv's <machine>/<commit8>-<environment> naming); BadResults names an unreadable one."""
    return {(path.parent.name, path.name.split("-", 1)[0]): read(path)
            for path in sorted(Path(results_dir).glob(f"*/*{SUFFIX}"))}


def record(run_dir, results_file) -> Path | None:
    """Write the run's choices beside `results_file`, joined with those already there (this run's
    win where both name a case); the path, or None where no case named a backend. An unreadable file
    already there is kept aside as <name>.unreadable, with one line saying so: the run's results
    stand, and nothing written before is lost."""
    from variantbench.metrics import write_memo

    chosen = gather(run_dir)
    if not chosen:
        return None
    target = path_for(results_file)
    try:
        earlier = read(target)
    except BadResults as why:
        target.replace(target.with_name(target.name + ".unreadable"))
        click.echo(f"variantbench: warning: {why}; kept as {target.name}.unreadable", err=True)
        earlier = {}
    write_memo(target, dict(sorted({**earlier, **chosen}.items())))  # atomically, as a memo
    return target
