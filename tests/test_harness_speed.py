"""The harness's own speed, measured with pytest-benchmark (reported, never asserted as a limit):
loading a synthetic history of 1,000 commits x 300 benchmarks, and deciding one gate over 300."""

import json
import math
import random

import pytest

from variantbench import decide, gate, results

COMMITS, BENCHMARKS = 1000, 300


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    folder = root / "h100"
    folder.mkdir()
    rng = random.Random(0)
    params = [[f"'v{i}'" for i in range(BENCHMARKS)]]
    for c in range(COMMITS):
        values = [1e-3 * (1 + i % 9) * math.exp(rng.gauss(0, 0.02)) for i in range(BENCHMARKS)]
        data = {
            "commit_hash": f"{c:040x}", "params": {"machine": "h100", "gpu": "H100", "driver": "1", "cuda": "13",
                                                   "torch": "2.11", "triton": "3.6"},
            "result_columns": ["result", "params", "stats_q_25", "stats_q_75", "stats_repeat"],
            "results": {"bench_attention.AttentionForward.time_forward": [
                values, params, [v * 0.99 for v in values], [v * 1.01 for v in values], [10] * BENCHMARKS]},
        }
        (folder / f"{c:08x}-existing.json").write_text(json.dumps(data))
    return root


def test_load_history_of_1000_commits(benchmark, history):
    frame = benchmark.pedantic(results.load_history, args=(history,), rounds=1, iterations=1)
    assert len(frame) == COMMITS * BENCHMARKS
    assert set(frame.gpu) == {"H100"}


def test_decide_one_gate_over_300_benchmarks(benchmark, history):
    base = results.load_file(history / "h100" / f"{0:08x}-existing.json")
    head = results.load_file(history / "h100" / f"{1:08x}-existing.json")
    verdicts = benchmark(gate.compare_frames, base, head, 1.10)
    assert len(verdicts) == BENCHMARKS
    assert decide.z_alpha(BENCHMARKS) > 3.5
