"""The signal budget as a decision: over only when significantly over, a variant judged by its
fastest fused implementation, a re-run pooled, and only what HEAD newly put over fails."""

import math

import pandas as pd
import pytest

from variantbench import budget

RATIO = "bench_attention.AttentionMetrics.track_ratio_to_baseline"
SE = "bench_attention.AttentionMetrics.track_ratio_standard_error"
NOISE = "bench_attention.AttentionMetrics.track_ratio_noise"
TIME = "bench_attention.AttentionMetrics.track_time_ratio"


def rows(cases):
    """A commit's tidy rows from {(variant, implementation): (ratio, standard error, time ratio)}."""
    records = []
    for (variant, impl), (ratio, se, time_ratio) in cases.items():
        params = (variant, impl, "s4k")
        records += [(RATIO, params, ratio), (SE, params, se), (TIME, params, time_ratio)]
    return pd.DataFrame(records, columns=["benchmark", "params", "value"])


def flat(family, variant):
    return 1.10


def test_over_budget_only_when_significantly_over():
    cases = budget.case_frame(rows({("a", "triton"): (1.12, 0.002, 1.0), ("b", "triton"): (1.12, 0.03, 1.0),
                                    ("c", "triton"): (1.05, 0.002, 1.0), ("d", "triton"): (None, None, None),
                                    ("e", "triton"): (1.50, 0.05, 1.0)}), flat)
    verdicts = dict(zip(cases.variant, cases.verdict))
    # a: 1.12 with a 1% floor on its 0.2% error: ln(1.12/1.10)/0.01 = 1.8 < z -> not significant
    assert verdicts == {"a": "at budget", "b": "at budget", "c": "within", "d": "failed", "e": "over budget"}


def test_the_error_has_a_floor_for_what_one_run_cannot_see():
    assert budget.standard_error(0.001, None) == budget.RUN_SIGMA
    assert budget.standard_error(0.04, None) == 0.04
    assert budget.standard_error(None, 0.20) == pytest.approx(0.20 / 1.349 * 1.25 / 5)
    assert budget.standard_error(None, None) == budget.RUN_SIGMA


def test_a_variant_takes_its_fastest_fused_implementation_and_flagged_ones_lead():
    cases = budget.case_frame(rows({("soft", "flex"): (1.9, 0.01, 1.6), ("soft", "triton"): (1.05, 0.01, 0.9),
                                    ("alibi", "flex"): (2.0, 0.01, 1.8), ("alibi", "triton"): (1.6, 0.01, 1.4),
                                    ("soft", "reference"): (30.0, 0.01, 30.0)}), flat)
    assert "reference" not in set(cases.implementation)
    variants = budget.variant_frame(cases)
    assert list(variants.variant) == ["alibi", "soft"]  # over budget first
    alibi, soft = variants.iloc[0], variants.iloc[1]
    assert (alibi.fastest, alibi.ratio, alibi.verdict, alibi.time_ratio) == ("triton", 1.6, "over budget", 1.4)
    assert (soft.fastest, soft.verdict) == ("triton", "within")


def test_a_rerun_that_disagrees_widens_the_error():
    first = pd.Series({"ratio": 1.20, "standard_error": 0.01, "budget": 1.10})
    agree = budget.pooled(first, pd.Series({"ratio": 1.20, "standard_error": 0.01, "budget": 1.10}), 10)
    assert agree["verdict"] == "over budget" and agree["standard_error"] == pytest.approx(0.01 / math.sqrt(2))
    flipped = budget.pooled(first, pd.Series({"ratio": 1.05, "standard_error": 0.01, "budget": 1.10}), 10)
    assert flipped["standard_error"] == pytest.approx(math.log(1.20 / 1.05) / 2)
    assert flipped["verdict"] == "at budget"


def test_only_variants_newly_over_fail():
    base = budget.variant_frame(budget.case_frame(rows({("a", "triton"): (1.5, 0.01, 1.0),
                                                        ("b", "triton"): (1.0, 0.01, 1.0)}), flat))
    head = budget.variant_frame(budget.case_frame(rows({("a", "triton"): (1.6, 0.01, 1.0),
                                                        ("b", "triton"): (1.5, 0.01, 1.0),
                                                        ("c", "triton"): (1.5, 0.01, 1.0)}), flat))
    over = budget.newly_over(base, head)
    assert dict(zip(over.variant, over.base_verdict)) == {"b": "within", "c": "new"}


def test_old_results_without_a_standard_error_use_their_relative_iqr():
    frame = pd.DataFrame([(RATIO, ("a", "triton", "s4k"), 1.3), (NOISE, ("a", "triton", "s4k"), 0.30)],
                         columns=["benchmark", "params", "value"])
    cases = budget.case_frame(frame, flat)
    assert cases.standard_error.iloc[0] == pytest.approx(0.30 / 1.349 * 1.25 / 5)
    assert cases.verdict.iloc[0] == "over budget"  # ln(1.3/1.1) / 5.6% = 3.0 > 2.33, one case compared


def test_a_rerun_confirms_or_clears_each_variant_newly_over():
    first = budget.case_frame(rows({("a", "triton"): (1.5, 0.01, 1.0), ("a", "flex"): (1.8, 0.01, 1.0),
                                    ("b", "triton"): (1.5, 0.01, 1.0), ("c", "triton"): (1.5, 0.01, 1.0)}), flat)
    over = budget.newly_over(budget.variant_frame(first.iloc[0:0]), budget.variant_frame(first))
    again = budget.case_frame(rows({("a", "triton"): (1.5, 0.01, 1.0), ("b", "triton"): (0.9, 0.01, 1.0)}), flat)
    decided = budget.confirm(first, again, over).set_index("variant")
    assert decided.loc["a", "confirmation"] == "confirmed by re-run" and decided.loc["a", "fastest"] == "triton"
    assert decided.loc["b", "confirmation"] == "not confirmed by re-run"
    assert decided.loc["b", "verdict"] in ("within", "at budget")
    assert decided.loc["c", "confirmation"] == "re-run has no ratio: unconfirmed, kept"
    assert list(budget.failing(decided.reset_index()).variant) == ["a", "c"]


def test_a_rerun_measures_the_ratio_benchmarks_of_the_families_over():
    frame = rows({("a", "triton"): (1.5, 0.01, 1.0)})
    frame = pd.concat([frame, pd.DataFrame([("bench_moe.MoEMetrics.track_ratio_to_baseline", ("r", "triton", "t"), 1.0)],
                                           columns=["benchmark", "params", "value"])])
    over = pd.DataFrame({"family": ["attention"]})
    assert budget.rerun_benchmarks(frame, over) == sorted([RATIO, SE])
