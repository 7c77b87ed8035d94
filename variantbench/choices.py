"""What each timed case ran through, kept beside its asv results: SDPA's backend, fused's pieces
("attention sdpa, mlp cublas"), a tuned plan; the `backend` its check names. asv records numbers
only, and a block that got slower because fused picked another piece, or SDPA another backend, says
so nowhere else once the run's memos are gone.

`variantbench run` gathers them from the run's metrics memos into <machine>/<results file's
stem>.choices (JSON, {case: backend}; not .json, which asv and the shard merge read as results),
joined with what earlier runs of the commit on that machine recorded there (lanes, shards)."""

import json
import os
from pathlib import Path

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
    """The choices recorded at `path`; {} where there are none or the file is not a JSON object."""
    try:
        recorded = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def record(run_dir, results_file) -> Path | None:
    """Write the run's choices beside `results_file`, joined with those already there (this run's
    win where both name a case); the path, or None where no case named a backend."""
    chosen = gather(run_dir)
    if not chosen:
        return None
    target = path_for(results_file)
    joined = {**read(target), **chosen}
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(dict(sorted(joined.items())), indent=1) + "\n")
    tmp.replace(target)
    return target
