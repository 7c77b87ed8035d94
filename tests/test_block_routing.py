"""The block check leaves out rows whose MoE routing is near a tie (reference/block.py routing_decided):
there either expert choice is right, and the two differ by an expert's whole contribution."""

import pytest
import torch

from reference import block as reference_block
from reference import moe as reference_moe
from variantbench import cases
from variantbench.catalog import family, sample_rows
from variantbench.shapes import moe_model

BLOCK = family("block")
TINY = BLOCK.shape("tiny-prefill-b2-s48")


def test_softmax_routing_margin_is_the_last_kept_logit_over_the_first_left_out():
    logits = torch.tensor([[3.0, 1.9, 2.0, 0.0], [0.0, 5.0, 1.0, 4.0]])
    rule, config = reference_moe.ROUTERS["softmax_topk"], moe_model("mixtral-8x7b")  # top 2
    margins, deciding = rule.margins(logits, config)
    assert torch.allclose(margins[:, 0], torch.tensor([2.0 - 1.9, 4.0 - 1.0]))
    # passed back, the same pairs weighed in another dtype's values, however those now order
    moved = torch.tensor([[3.0, 2.1, 2.0, 0.0], [0.0, 5.0, 1.0, 4.0]])
    assert torch.allclose(rule.margins(moved, config, deciding)[0][:, 0], torch.tensor([-0.1, 3.0]))


def test_grouped_routing_margins_are_the_groups_call_and_the_eligible_experts_call():
    rule = reference_moe.ROUTERS["sigmoid_grouped_topk"]
    config = moe_model("deepseek-v3@16")  # 8 groups of 2, 4 eligible: 8 candidates, top 8
    ranked = torch.arange(16, dtype=torch.float64).flip(0)[None].clone()  # groups rank 29, 25, 21, 17, 13, ...
    margins, _ = rule.margins(ranked, config)
    assert margins.tolist() == [[17.0 - 13.0, float("inf")]]  # every candidate kept: no experts' call
    config = moe_model("deepseek-v3@32")  # 4 a group: 16 candidates for top 8
    ranked = torch.arange(32, dtype=torch.float64).flip(0)[None].clone()
    ranked[0, 7] = ranked[0, 8] + 0.25  # the 8th and 9th experts (one group) nearly tie
    margins, deciding = rule.margins(ranked, config)
    assert torch.allclose(margins, torch.tensor([[(19.0 + 18.0) - (15.0 + 14.0), 0.25]], dtype=torch.float64))
    ranked[0, 31] = 100.0  # another dtype lifts an ineligible group's expert: the candidates stay float64's
    assert torch.allclose(rule.margins(ranked, config, deciding)[0][:, 1], torch.tensor([0.25], dtype=torch.float64))


def test_a_row_whose_own_error_came_out_near_zero_is_weighed_against_the_calls_error():
    # three rows, one call: margins 0.5, 0.5, 40 in float64; the working dtype's error about 1 a row,
    # but the first row's draw happened to be 0.001: against its own, 0.5 > 8 x 0.001 would count it
    exact = torch.tensor([[0.5], [0.5], [40.0]], dtype=torch.float64)
    low = exact + torch.tensor([[0.001], [1.0], [-1.2]], dtype=torch.float64)
    assert reference_block.clear_of_ties(exact, low).tolist() == [False, False, True]


def test_a_call_with_nothing_left_out_decides_every_row_and_the_others_still_weigh():
    # the second call kept every candidate (infinite margins, a NaN error); the first decides alone
    exact = torch.tensor([[0.5, float("inf")], [40.0, float("inf")]], dtype=torch.float64)
    low = torch.tensor([[0.5, float("inf")], [39.0, float("inf")]], dtype=torch.float64)
    assert reference_block.clear_of_ties(exact, low).tolist() == [False, True]
    assert reference_block.clear_of_ties(exact[:, 1:], low[:, 1:]).tolist() == [True, True]


def _routed_experts(variant, problem, rows, dtype):
    p = problem.converted(dtype)
    h = reference_block.attended(variant, p.config, p, p.x, rows=rows)
    routed = reference_block.lookup(reference_block.NORMS, variant.norm, "norm")(h, p.mlp_norm, p.config.eps)
    experts, _ = reference_moe.route(variant.router, p.config.moe_config, routed.reshape(-1, p.x.shape[-1]),
                                     p.moe.router_weight, p.moe.selection_bias)
    return experts.sort(-1).values.view(p.x.shape[0], rows.numel(), -1)


def test_every_row_bfloat16_routes_otherwise_than_float64_is_left_undecided():
    # at the check's seed, DeepSeek-V3's tiny block in bfloat16 routes one of its 96 rows otherwise
    variant = BLOCK.variant("deepseek-v3")
    problem = BLOCK.make_problem(variant, TINY, device="cpu", dtype=torch.bfloat16,
                                 seed=cases.SEED + cases.CHECK_SEED_OFFSET)
    rows = sample_rows(TINY.q_len, cases.CHECK_ROWS, problem.seed)
    decided = reference_block.routing_decided(variant, problem, rows)
    flipped = (_routed_experts(variant, problem, rows, torch.float64)
               != _routed_experts(variant, problem, rows, torch.bfloat16)).any(-1)
    assert flipped.any(), "the seed no longer shows a flip: pick one that does"
    assert not (flipped & decided).any()
    assert decided.float().mean() > 0.75  # near-ties are few: most rows are still compared


def test_the_check_compares_undecided_rows_as_zeros_on_both_sides():
    variant = BLOCK.variant("deepseek-v3")
    problem = BLOCK.make_problem(variant, TINY, device="cpu", dtype=torch.bfloat16, seed=cases.SEED + cases.CHECK_SEED_OFFSET)
    out = reference_block.block(variant, problem.config, problem, problem.x)
    reference, got, _ = BLOCK.check_views(variant, problem, out, cases.CHECK_ROWS)
    undecided = ~problem.check_rows.decided[..., 0]
    assert undecided.any()
    assert (got[undecided] == 0).all() and (reference(torch.float64)[undecided] == 0).all()
    assert (reference(torch.float64)[~undecided] != 0).any(-1).all()


def test_a_block_without_moe_compares_every_row():
    variant = BLOCK.variant("llama-3-8b")
    problem = BLOCK.make_problem(variant, TINY, device="cpu", dtype=torch.bfloat16, seed=cases.SEED)
    assert reference_block.routing_decided(variant, problem, torch.arange(8)).all()


def test_the_check_counts_only_decided_rows_and_refuses_when_none_are(monkeypatch):
    variant = BLOCK.variant("deepseek-v3")
    problem = BLOCK.make_problem(variant, TINY, device="cpu", dtype=torch.bfloat16, seed=cases.SEED + cases.CHECK_SEED_OFFSET)
    out = reference_block.block(variant, problem.config, problem, problem.x)
    _, _, compared = BLOCK.check_views(variant, problem, out, cases.CHECK_ROWS)
    assert compared == int(problem.check_rows.decided.sum()) < problem.x.shape[0] * problem.check_rows.positions.numel()
    monkeypatch.setattr(reference_block, "ROUTING_MARGIN", float("inf"))
    problem.seed += 1  # refilled (cases.prepare_checked): the rows are decided again, now none
    with pytest.raises(ValueError, match="nothing the check could compare"):
        BLOCK.check_views(variant, problem, out, cases.CHECK_ROWS)
