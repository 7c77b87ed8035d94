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


def power_benchmark(timed: str, track: str = "track_sm_clock_mhz") -> str:
    """The power track recorded over a timed benchmark's samples (suite/common.py PowerBenchmark):
    bench_moe.MoEForward.time_forward -> bench_moe.MoEPower.<track>, and
    bench_attention.AttentionForwardBackward.time_forward_backward -> ...AttentionForwardBackwardPower.<track>."""
    module, timed_class, _ = timed.split(".")
    return f"{module}.{timed_class.removesuffix('Forward')}Power.{track}"


# Benchmark name endings every family's suite module shares (bench_<family>.<Family>Forward.time_forward, ...).
FORWARD_FIGURES = {
    "Forward.time_forward": "ms",
    "Metrics.track_tflops": "TFLOP/s",
    "Metrics.track_gbps": "GB/s",
    "Metrics.track_percent_of_peak": "% roofline",
    "Metrics.track_ratio_to_baseline": "x baseline",
    "ReferenceSpeedup.track_speedup_over_reference": "x reference",
    # the forward's own clock (power_benchmark): ForwardBackwardPower's ends the same way and is left out
    "Power.track_sm_clock_mhz": "SM MHz",
}


def forward_tables(frame: pd.DataFrame) -> dict:
    """{family: forward figures per (shape, variant, implementation)}: ms, TFLOP/s, GB/s, % of roofline,
    ratio to baseline, speedup over reference, the mean SM clock over the forward's samples (GPU), in
    run order."""
    tables = {}
    def label(benchmark):
        return next((name for ending, name in FORWARD_FIGURES.items() if benchmark.endswith(ending)), None)

    clocks = {power_benchmark(b) for b in frame.benchmark.unique() if b.endswith("Forward.time_forward")}
    figures = frame.assign(family=frame.benchmark.str.extract(r"^bench_(\w+)\.", expand=False),
                           metric=frame.benchmark.map(label)).dropna(subset=["metric"])
    figures = figures[(figures.metric != "SM MHz") | figures.benchmark.isin(clocks)]
    for family, rows in figures.groupby("family", sort=False):
        rows = rows.copy()
        rows["value"] = rows.value.astype(float)
        rows.loc[rows.metric == "ms", "value"] *= 1e3
        rows[["variant", "implementation", "shape"]] = pd.DataFrame([p[:3] for p in rows.params], index=rows.index)
        table = rows.pivot_table(index=["shape", "variant", "implementation"], columns="metric", values="value",
                                 sort=False)
        tables[family] = table[[c for c in FORWARD_FIGURES.values() if c in table.columns]]
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
