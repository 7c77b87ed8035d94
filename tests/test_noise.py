"""Between-run noise from A/A pairs: which commits pair (a scratch git repository), what a pair
contributes, how a benchmark's sigma is chosen, and a smoke run over the committed history."""

import json
import math
import statistics
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from variantbench import decide, noise, results

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK = "bench_attention.AttentionForward.time_forward"
H100 = {"gpu": "NVIDIA H100 80GB HBM3", "gpu_count": "1", "driver": "580", "cuda": "13.0", "torch": "2.11.0",
        "triton": "3.6.0"}
H200 = {**H100, "gpu": "NVIDIA H200"}


def _git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def _commit(repo, files, message):
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    """(repository, commits): c1 and c3 and c5 touch only what is not timed, c2 a kernel, c4 the timer;
    so (c0, c1), (c2, c3) and (c4, c5) are the A/A pairs."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    commits = [
        _commit(repo, {"kernels/attention.py": "v1", "README.md": "a", "variantbench/timing.py": "t1"}, "c0"),
        _commit(repo, {"README.md": "b", "variantbench/cli.py": "x"}, "c1: docs and the CLI"),
        _commit(repo, {"kernels/attention.py": "v2"}, "c2: a kernel"),
        _commit(repo, {"reports/README.md": "r", "tests/test_x.py": "t"}, "c3: reports and tests"),
        _commit(repo, {"variantbench/timing.py": "t2"}, "c4: the timer"),
        _commit(repo, {"README.md": "c"}, "c5: docs"),
    ]
    return repo, commits


def test_same_timed_code_follows_the_timed_paths(repo):
    repo, c = repo
    assert [noise.same_timed_code(repo, a, b) for a, b in zip(c, c[1:])] == [True, False, True, False, True]
    assert noise.same_timed_code(repo, c[0], c[3]) is False  # the kernel differs, whatever lies between
    assert noise.same_timed_code(repo, c[0], "f" * 40) is None  # git does not know it: skipped, not an error


@pytest.mark.parametrize("path", noise.TIMED_PATHS)
def test_a_change_under_any_timed_path_breaks_the_pair(repo, path):
    repo, c = repo
    changed = _commit(repo, {path + "new.py" if path.endswith("/") else path: "changed"}, f"change {path}")
    assert noise.same_timed_code(repo, c[-1], changed) is False


def test_outside_a_git_repository_is_an_error_not_no_pairs(tmp_path):
    with pytest.raises(RuntimeError, match="not a git repository"):
        noise.same_timed_code(tmp_path, "a" * 40, "b" * 40)


def _samples(median, offset, n=10, spread=0.005):
    """n samples about median * exp(offset), evenly spread (no randomness: the expected numbers are exact)."""
    return [median * math.exp(offset + spread * (k - (n - 1) / 2) / n) for k in range(n)]


def _write(folder, commit, date, identity, runs):
    """An asv results file; runs: params -> samples (a list), None (failed), or a float (one sample,
    no spread recorded)."""
    folder.mkdir(parents=True, exist_ok=True)
    combos = list(runs)
    values, samples, repeats = [], [], []
    for run in runs.values():
        values.append(None if run is None else run if isinstance(run, float) else statistics.median(run))
        samples.append(run if isinstance(run, list) else None)
        repeats.append(len(run) if isinstance(run, list) else 1)
    data = {"commit_hash": commit, "date": date, "params": {"machine": folder.name, **identity},
            "result_columns": ["result", "params", "stats_q_25", "stats_q_75", "stats_repeat", "samples"],
            "results": {BENCHMARK: [values, [[f"'{p}'" for p in dict.fromkeys(c[i] for c in combos)]
                                             for i in range(3)], values, values, repeats, samples]}}
    (folder / f"{commit[:8]}-existing.json").write_text(json.dumps(data))


GQA, CAUSAL = ("gqa_8", "triton", "s4k"), ("causal", "triton", "s4k")


def test_calibrate_pairs_identical_code_per_identity(repo, tmp_path):
    """A/A pairs only across identical timed code, consecutive by date, on one identity; a failed run
    and a one-sample run pair with nothing; a commit git does not know pairs with nothing."""
    repo, c = repo
    offsets = [0.0, 0.02, -0.01, 0.01, 0.03, 0.0]  # each commit's run offset (log scale)
    folder = tmp_path / "results" / "h100"
    for n, commit in enumerate(c):
        _write(folder, commit, 1_700_000_000_000 + n * 1000, H100,
               {GQA: _samples(1e-3, offsets[n]), CAUSAL: None if n == 3 else _samples(2e-3, -offsets[n])})
    _write(folder, "f" * 40, 1_700_000_000_000 + 4500, H100, {GQA: _samples(1e-3, 0.5), CAUSAL: 1e-3})
    # The same commits on an H200, 10% slower: never paired with the H100's.
    for n, commit in enumerate(c):
        _write(tmp_path / "results" / "h200", commit, 1_700_000_000_000 + n * 1000, H200,
               {GQA: _samples(1.1e-3, 0.0), CAUSAL: _samples(2.2e-3, 0.0)})
    history = results.load_history(tmp_path / "results")

    pairs = noise.aa_pairs(noise.of_identity(history, H100), repo)
    found = {(p, first, second) for p, first, second in zip(pairs.params, pairs["first"], pairs.second)}
    # GQA: (c0, c1), (c2, c3); (c4, c5) is broken by the unknown commit dated between them.
    # CAUSAL: (c0, c1) only: it failed on c3, and the unknown commit's one sample carries no spread.
    assert found == {(GQA, c[0], c[1]), (GQA, c[2], c[3]), (CAUSAL, c[0], c[1])}
    gqa = pairs[pairs.params == GQA].set_index("first")
    assert gqa.log_ratio[c[0]] == pytest.approx(0.02) and gqa.log_ratio[c[2]] == pytest.approx(0.02)
    expected_within = decide.within_variance({"samples": _samples(1e-3, 0.0)}, {"samples": _samples(1e-3, 0.02)})
    assert gqa.within_variance[c[0]] == pytest.approx(expected_within)

    calibration = noise.calibrate(history, repo, H100)
    pooled = calibration.get(BENCHMARK, GQA)
    mean_excess = (pairs.log_ratio ** 2 - pairs.within_variance).mean()
    assert pooled == noise.Noise(math.sqrt(mean_excess / 2), 3, "pooled")
    assert calibration.own == {}  # 2 pairs or fewer per parameter set: below MIN_PAIRS
    # The commits being decided never calibrate their own comparison: without c0, (c0, c1) is gone.
    assert noise.calibrate(history, repo, H100, leave_out=(c[0],)).get(BENCHMARK, GQA).pairs == 1
    assert noise.calibrate(history, repo, H200).get(BENCHMARK, GQA).sigma == 0.0  # identical runs
    assert noise.calibrate(history, repo, {**H100, "driver": "590"}).get(BENCHMARK, GQA) is None


def test_a_parameter_set_keeps_its_own_sigma_only_where_significantly_noisier():
    """Twenty quiet parameter sets and one 3x noisier, 6 pairs each: the noisy one is found and keeps
    its own; the quiet ones take the pool."""
    rows = []
    for i in range(21):
        scale = 3.0 if i == 0 else 1.0
        for k in range(6):
            d = 0.01 * scale * math.sqrt(2) * (-1) ** k * (1 + 0.1 * (k % 3))  # rms ~ sqrt(2) sigma_b
            rows.append((BENCHMARK, (f"v{i}",), d, 1e-6))
    calibration = noise.estimate(pd.DataFrame(rows, columns=["benchmark", "params", "log_ratio", "within_variance"]))
    assert set(calibration.own) == {(BENCHMARK, ("v0",))}
    assert calibration.get(BENCHMARK, ("v0",)).scope == "own" and calibration.get(BENCHMARK, ("v0",)).pairs == 6
    mean_square = 2 * 0.03 ** 2 * (1 + 1.1 ** 2 + 1.2 ** 2) / 3
    assert calibration.get(BENCHMARK, ("v0",)).sigma == pytest.approx(math.sqrt((mean_square - 1e-6) / 2))
    quiet = calibration.get(BENCHMARK, ("v7",))
    assert quiet.scope == "pooled" and quiet.pairs == 126
    assert calibration.get("bench_moe.MoEForward.time_forward", ("v0",)) is None  # nothing to calibrate from


def test_calibrate_the_committed_history():
    """Smoke test on reports/results and this repository (counts grow with the history: printed, not
    asserted): every pair found is one of identical timed code, with a finite log ratio."""
    history = results.load_history(ROOT / "reports" / "results")
    for machine, rows in history.groupby("machine"):
        latest = rows.sort_values("date").iloc[-1]
        identity = {key: latest[key] for key in results.IDENTITY_KEYS if key in rows}
        pairs = noise.aa_pairs(noise.of_identity(history, identity), ROOT)
        commits = pairs[["first", "second"]].drop_duplicates()
        calibration = noise.estimate(pairs)
        print(f"{machine}: {len(commits)} A/A pairs of commits ("
              + ", ".join(f"{a[:7]}-{b[:7]}" for a, b in commits.itertuples(index=False)) + f"), {len(pairs)} "
              f"benchmark pairs; " + "; ".join(f"{b.split('.', 1)[1]} sigma_b {n.sigma:.2%} from {n.pairs}"
                                              for b, n in calibration.pooled.items()))
        assert all(noise.same_timed_code(ROOT, a, b) for a, b in commits.itertuples(index=False))
        assert pairs.log_ratio.map(math.isfinite).all() and (pairs.within_variance > 0).all()
