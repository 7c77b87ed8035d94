"""asv result files as a tidy pandas DataFrame: one row per (benchmark, parameter set, commit, machine)."""

import itertools
import json
from pathlib import Path

import pandas as pd


class BadResults(Exception):
    """A results file that is not what asv writes (truncated, malformed); the message names it."""


# `failed`: asv wrote null (the benchmark raised or crashed), as against NaN (skipped): in a frame both
# read as NaN in `value`.
# `date`: the commit's date, which asv records in each file (ms since the epoch).
COLUMNS = ["benchmark", "params", "value", "q25", "q75", "repeat", "samples", "commit", "machine", "failed", "date"]


# Files recorded before cudnn and nccl joined the identity lack them (None): unknown, not different
# (gate.check_identity).
IDENTITY_KEYS = ("gpu", "gpu_count", "driver", "cuda", "cudnn", "nccl", "torch", "triton")


def _read(path: Path):
    """(rows, machine params) of one results file, parsed once."""
    try:
        data = json.loads(Path(path).read_text())
        columns = data["result_columns"]
        machine_params = data["params"]
        machine = machine_params["machine"]
        commit = data["commit_hash"]
        date = data.get("date")  # ms; made a datetime column once per frame (per row cost 1 ms/file)
        rows = []
        for benchmark, entry in data["results"].items():
            fields = dict(zip(columns, entry))  # asv leaves trailing empty columns out of `entry`
            params = fields.get("params") or []
            values = fields["result"] if isinstance(fields["result"], list) else [fields["result"]]
            combos = list(itertools.product(*params)) if params else [()]
            if any(isinstance(v, (int, float)) and v < 0 for v in values):
                raise ValueError(f"negative value in {benchmark}")

            def column(name, fields=fields, size=len(combos)):
                return fields.get(name) or [None] * size

            # strict: a column shorter than the parameter grid is a damaged file, not fewer results.
            for combo, value, lo, hi, repeat, samples in zip(
                combos, values, column("stats_q_25"), column("stats_q_75"), column("stats_repeat"), column("samples"),
                strict=True,
            ):
                rows.append((benchmark, tuple(p.strip("'") for p in combo), value, lo, hi, repeat,
                             tuple(samples) if samples else None, commit, machine, value is None, date))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadResults(f"{path}: not a readable asv results file ({type(error).__name__}: {error})") from None
    return rows, machine_params


def load_file(path: Path) -> pd.DataFrame:
    """One asv results file as tidy rows. `samples` holds every sample where the run recorded them
    (`--record-samples`); q25/q75 and repeat summarise them otherwise."""
    return load_with_identity(path)[0]


def load_with_identity(path: Path) -> tuple[pd.DataFrame, dict]:
    """(rows, identity) of one results file, parsed once. The identity is the machine params it was
    measured with: GPU model, driver, CUDA, cuDNN, NCCL, torch, triton, and the asv machine name."""
    rows, params = _read(path)
    return _dated(pd.DataFrame(rows, columns=COLUMNS)), {k: params.get(k) for k in IDENTITY_KEYS + ("machine",)}


def _dated(frame: pd.DataFrame) -> pd.DataFrame:
    frame["date"] = pd.to_datetime(frame["date"], unit="ms")
    return frame


def results_file(results_dir: Path, machine: str, commit: str) -> Path | None:
    folder = Path(results_dir) / machine
    matches = sorted(folder.glob(f"{commit[:8]}-*.json"))
    return matches[-1] if matches else None


def forward_tables(frame: pd.DataFrame) -> dict:
    """{family: the forward's figures.RUN_TABLE per (shape, variant, implementation)}, in run order."""
    from variantbench import figures

    tables = {}

    def picked(benchmark):
        return next((f for f in figures.RUN_TABLE if f.of(benchmark)), None)

    chosen = frame.assign(family=frame.benchmark.str.extract(r"^bench_(\w+)\.", expand=False),
                          figure=frame.benchmark.map(picked)).dropna(subset=["figure"])
    for family, rows in chosen.groupby("family", sort=False):
        rows = rows.assign(metric=[f.label for f in rows.figure],
                           value=[float(v) * f.scale for v, f in zip(rows.value, rows.figure)])
        rows[["variant", "implementation", "shape"]] = pd.DataFrame([p[:3] for p in rows.params], index=rows.index)
        table = rows.pivot_table(index=["shape", "variant", "implementation"], columns="metric", values="value",
                                 sort=False)
        tables[family] = table[[f.label for f in figures.RUN_TABLE if f.label in table.columns]]
    return tables


def load_history(results_dir: Path) -> pd.DataFrame:
    """Every results file under results_dir as one tidy frame, with each file's machine identity
    (IDENTITY_KEYS) as columns. A malformed file raises BadResults naming it."""
    rows = []
    for path in sorted(Path(results_dir).glob("*/*.json")):
        if path.name == "machine.json":
            continue
        file_rows, params = _read(path)
        identity = tuple(params.get(k) for k in IDENTITY_KEYS)
        rows.extend(row + identity for row in file_rows)
    return _dated(pd.DataFrame(rows, columns=COLUMNS + list(IDENTITY_KEYS)))
