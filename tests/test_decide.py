"""The regression decision on simulated suites: false alarms stay rare, real slowdowns are caught.

Each simulated benchmark draws 10 samples of lognormal time with 2% noise (what asv records per
benchmark on a quiet GPU); a suite has 300 benchmarks; a suspect is re-run on both commits and confirmed
on the pooled samples, as the gate does.
"""

import math
import random

import pytest

from variantbench.decide import RERUN_SAMPLES, compare, confirm

N_BENCHMARKS = 300
SAMPLES = 10
NOISE = 0.02


def draw(rng, median, noise=NOISE, n=SAMPLES):
    samples = [median * math.exp(rng.gauss(0.0, noise)) for _ in range(n)]
    return {"value": sorted(samples)[n // 2], "samples": samples}


def gate_fails(rng, slowdowns, noise=NOISE):
    """True if the simulated gate fails: some benchmark is slower on HEAD and again on a re-run."""
    for i in range(N_BENCHMARKS):
        true_ratio = slowdowns.get(i, 1.0)
        median = 1e-3 * (1 + i % 7)
        base, head = draw(rng, median, noise), draw(rng, median * true_ratio, noise)
        if compare(base, head, N_BENCHMARKS).verdict == "slower":
            base_again = draw(rng, median, noise, RERUN_SAMPLES)
            head_again = draw(rng, median * true_ratio, noise, RERUN_SAMPLES)
            if confirm(base, head, base_again, head_again, N_BENCHMARKS).verdict == "slower":
                return True
    return False


def test_unchanged_suites_pass_at_least_95_percent():
    rng = random.Random(1)
    trials = 200
    failures = sum(gate_fails(rng, {}) for _ in range(trials))
    assert failures / trials <= 0.05, failures


@pytest.mark.parametrize("slowdown,least,most", [(1.10, 0.95, 1.0), (1.20, 1.0, 1.0), (1.05, 0.0, 0.0)])
def test_planted_slowdown_in_one_benchmark(slowdown, least, most):
    rng = random.Random(int(slowdown * 100))
    trials = 150
    caught = 0
    for _ in range(trials):
        caught += gate_fails(rng, {rng.randrange(N_BENCHMARKS): slowdown})
    assert least <= caught / trials <= most, caught


def test_noise_too_large_for_the_factor_is_noisy_not_a_failure():
    rng = random.Random(3)
    base, head = draw(rng, 1e-3, noise=0.15), draw(rng, 1.3e-3, noise=0.15)
    assert compare(base, head, N_BENCHMARKS).verdict == "noisy"


def test_crash_on_head_is_failed_and_on_both_is_skipped():
    ok = {"value": 1e-3, "samples": [1e-3] * 10}
    assert compare(ok, {"value": None}, 10).verdict == "failed"
    assert compare({"value": float("nan")}, {"value": None}, 10).verdict == "skipped"
    assert compare(None, ok, 10).verdict == "new"
    assert compare(ok, None, 10).verdict == "gone"


def test_quartiles_stand_in_for_samples():
    base = {"value": 1.00e-3, "q25": 0.99e-3, "q75": 1.01e-3, "repeat": 10}
    head = {"value": 1.25e-3, "q25": 1.24e-3, "q75": 1.26e-3, "repeat": 10}
    assert compare(base, head, 300).verdict == "slower"
    assert compare(head, base, 300).verdict == "faster"


def test_negative_or_zero_timings_are_not_compared():
    ok = {"value": 1e-3, "samples": [1e-3] * 10}
    assert compare(ok, {"value": -1e-3}, 10).verdict == "failed"
    assert compare({"value": 0.0}, ok, 10).verdict == "new"


def _suite_frame(rng, slowdowns=None):
    """One commit's time_forward results over N_BENCHMARKS parameter sets, as gate.compare_frames
    reads them: medians and the samples they come from."""
    import pandas as pd

    rows = []
    for i in range(N_BENCHMARKS):
        side = draw(rng, 1e-3 * (1 + i % 7) * (slowdowns or {}).get(i, 1.0))
        rows.append({"benchmark": "bench_attention.AttentionForward.time_forward", "params": (f"v{i:03d}",),
                     "value": side["value"], "samples": side["samples"], "q25": None, "q75": None, "repeat": SAMPLES})
    return pd.DataFrame(rows)


def test_decide_one_gate_over_300_benchmarks():
    """A gate's first pass over a whole suite: unchanged, every benchmark is "same" (2% noise at 10
    samples resolves the factor, so none is noisy, and none is a false suspect); with one benchmark
    25% slower, that one, and only it, is "slower". Fails if the decision flags noise or misses it."""
    from variantbench import gate

    rng = random.Random(5)
    base = _suite_frame(rng)
    unchanged = gate.compare_frames(base, _suite_frame(rng), 1.10)
    assert len(unchanged) == N_BENCHMARKS
    assert unchanged.verdict.value_counts().to_dict() == {"same": N_BENCHMARKS}
    slowed = gate.compare_frames(base, _suite_frame(rng, {123: 1.25}), 1.10)
    assert list(slowed[slowed.verdict != "same"].params) == ["v123"]
    assert slowed.set_index("params").loc["v123", "verdict"] == "slower"
