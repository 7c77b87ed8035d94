"""The moe family on CPU: routers (ties, renormalisation, group limits, the selection-only bias),
the grouped_mm layer against the reference (empty experts included), the Zipf load, the work model."""

import importlib

import pytest
import torch

from kernels.moe import grouped_mm
from reference.moe import moe, route, sigmoid_grouped_topk, softmax_topk, top_k
from variantbench import cases, check_workers
from variantbench.catalog import family
from variantbench.catalog.moe import MoEVariant
from variantbench.shapes import MoEShape, moe_model

FAMILY = family("moe")
TINY = moe_model("tiny-moe")


def test_top_k_ties_go_to_the_lower_expert_index():
    values, indices = top_k(torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]]), 2)
    assert indices.tolist() == [[1, 2], [0, 1]]
    assert values.tolist() == [[3.0, 3.0], [5.0, 5.0]]


def test_softmax_topk_renormalises_the_chosen_probabilities():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0]])
    experts, weights = softmax_topk(logits, 2)
    probs = torch.softmax(logits, -1)[0]
    assert experts.tolist() == [[1, 2]]
    assert torch.allclose(weights, (probs[[1, 2]] / probs[[1, 2]].sum())[None])


def test_sigmoid_grouped_topk_stays_in_the_best_groups_and_weights_without_the_bias():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(256, 8, generator=gen)
    bias = torch.zeros(8)
    bias[7] = 10.0  # selection only: expert 7 is always chosen, but weighted by its own score
    experts, weights = sigmoid_grouped_topk(logits, 2, bias, n_groups=4, topk_groups=2, scale=2.5)
    assert (experts == 7).any(-1).all()
    groups = experts // 2
    assert all(len(set(g)) <= 2 for g in groups.tolist())
    scores = torch.sigmoid(logits).gather(1, experts)
    assert torch.allclose(weights, 2.5 * scores / scores.sum(-1, keepdim=True))


def test_group_limit_excludes_a_strong_expert_of_a_weak_group():
    # Group 0 = experts 0,1; group 1 = experts 2,3. Expert 0 is the single best, but group 1's two
    # experts together outrank group 0's pair, and only one group is eligible.
    logits = torch.tensor([[3.0, -6.0, 2.0, 2.0]])
    experts, _ = sigmoid_grouped_topk(logits, 2, torch.zeros(4), n_groups=2, topk_groups=1, scale=1.0)
    assert sorted(experts[0].tolist()) == [2, 3]


def test_an_unknown_router_fails_when_the_entry_is_made_with_the_known_ones():
    """It once ran DeepSeek's router, in the reference and in every kernel, and `check` passed it."""
    known = "softmax_topk, sigmoid_grouped_topk"
    with pytest.raises(ValueError, match=f"unknown MoE router 'sigmoid_topk'; known: {known}"):
        MoEVariant("sigmoid_topk", "sigmoid_topk")


def test_a_number_in_a_moe_variant_name_stands_for_no_field():
    """Top-k comes from the shape's model: `softmax_topk_2` would claim what no field sets."""
    with pytest.raises(ValueError, match="'softmax_topk_2': the number 2 in its name stands for no field"):
        MoEVariant("softmax_topk_2", "softmax_topk")


@pytest.mark.parametrize("module", ["reference.moe", "kernels.moe.grouped_mm"])
def test_every_catalog_router_has_its_function(module):
    assert {v.router for v in FAMILY.variants} <= set(importlib.import_module(module).ROUTERS)


@pytest.mark.parametrize("route_by_name", [route, grouped_mm._route], ids=["reference", "grouped_mm"])
def test_an_unknown_router_fails_where_routing_looks_it_up(route_by_name):
    x = torch.randn(4, TINY.dim)
    with pytest.raises(ValueError, match="unknown .*router 'sigmoid_topk'; known: softmax_topk, sigmoid_grouped_topk"):
        route_by_name("sigmoid_topk", TINY, x, torch.randn(TINY.n_experts, TINY.dim), torch.zeros(TINY.n_experts))


@pytest.mark.parametrize("router", ["softmax_topk", "sigmoid_grouped_topk"])
def test_grouped_mm_routes_like_the_reference(router):
    problem = FAMILY.make_problem(None, MoEShape("t", "tiny-moe", 512, "zipf", device="cpu"), device=torch.device("cpu"),
                                  dtype=torch.float32, seed=5)
    args = (TINY, problem.x, problem.router_weight, problem.selection_bias)
    ref_experts, ref_weights = route(router, *args)
    experts, weights = grouped_mm._route(router, *args)
    assert torch.equal(experts.sort(-1).values, ref_experts.sort(-1).values)
    assert torch.allclose(weights.sort(-1).values, ref_weights.sort(-1).values, atol=1e-6)


@pytest.mark.parametrize("tokens", [1, 3, 64])  # 1 and 3 tokens leave most experts empty
@pytest.mark.parametrize("variant", ["softmax_topk", "sigmoid_grouped_topk"])
def test_grouped_mm_layer_matches_the_reference(variant, tokens):
    v = FAMILY.variant(variant)
    shape = MoEShape("t", "tiny-moe", tokens, "zipf", device="cpu")
    problem = FAMILY.make_problem(v, shape, device=torch.device("cpu"), dtype=torch.float32, seed=11)
    out = grouped_mm.prepare(v, problem)()
    exact = moe(v.router, TINY, problem.x, problem.router_weight, problem.selection_bias, problem.w13, problem.w2,
                problem.shared13, problem.shared2, compute_dtype=torch.float64)
    assert out.shape == (tokens, TINY.dim)
    assert torch.allclose(out.double(), exact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", [s.name for s in FAMILY.shapes if s.device == "cpu"])
@pytest.mark.parametrize("variant", [v.name for v in FAMILY.variants])
def test_every_cpu_case_passes_its_check(variant, name):
    runnable = [c for c in cases.iter_cases("moe", "cpu", variants=[variant], shapes=[name]) if not isinstance(c, tuple)]
    assert {c.implementation.name for c in runnable} >= {"reference", "grouped_mm"}
    for case in runnable:
        result = check_workers.check_one(case)
        assert result.status == "ok", result.line


def _load(skew, tokens=4096, seeds=(2, 5, 9)):
    """Each expert's share of the routed pairs, over problems of a few seeds: at 8 experts of dim 64 a
    router row's random part moves its logit about as much as the zipf offsets do, so one seed's hottest
    expert took 1.9x to 3.4x its fair share."""
    shape = MoEShape("t", "tiny-moe", tokens, skew, device="cpu")
    counts = 0
    for seed in seeds:
        problem = FAMILY.make_problem(None, shape, device=torch.device("cpu"), dtype=torch.float32, seed=seed)
        experts, _ = route("softmax_topk", TINY, problem.x, problem.router_weight, problem.selection_bias)
        counts = counts + torch.bincount(experts.flatten(), minlength=TINY.n_experts).float()
    return counts / counts.sum()


def test_zipf_load_concentrates_on_hot_experts_and_uniform_does_not():
    uniform, zipf = _load("uniform"), _load("zipf")
    fair = 1 / TINY.n_experts
    assert uniform.max() < 1.6 * fair
    assert zipf.max() > 2.5 * fair
    assert zipf.sort(descending=True).values[:2].sum() > 0.45


def test_work_counts_routed_pairs_and_only_the_experts_reached():
    v = FAMILY.variant("softmax_topk")
    one_token = FAMILY.make_problem(v, MoEShape("t", "tiny-moe", 1, device="cpu"), device=torch.device("cpu"),
                                    dtype=torch.float32, seed=1)
    flops, nbytes = FAMILY.work(v, one_token)
    d, f, e = TINY.dim, TINY.ffn_dim, TINY.n_experts
    assert flops == 6 * d * f * TINY.top_k + 6 * d * f * TINY.n_shared + 2 * d * e
    assert nbytes == 4 * (3 * d * f * TINY.top_k + 3 * d * f * TINY.n_shared + e * d + 2 * d)


triton_moe = pytest.importorskip("kernels.moe.triton_moe")


def test_every_catalog_router_has_its_triton_kernel():
    assert {v.router for v in FAMILY.variants} <= set(triton_moe.ROUTERS)


def test_an_unknown_router_fails_in_the_triton_wrapper():
    x = torch.randn(4, TINY.dim)
    with pytest.raises(ValueError, match="unknown Triton MoE router 'sigmoid_topk'; known: softmax_topk, "):
        triton_moe.route("sigmoid_topk", TINY, x, torch.randn(TINY.n_experts, TINY.dim), torch.zeros(TINY.n_experts))


@pytest.mark.parametrize("router", ["softmax_topk", "sigmoid_grouped_topk"])
@pytest.mark.parametrize("n_experts, n_groups", [(8, 4), (32, 8)])  # 8 experts pad to tl.dot's 16
# None: the plan, split at 37 tokens on the CPU; 0: the single pass; 3 asked of a 200-wide dim: whole loads, 128 + 72
@pytest.mark.parametrize("logit_splits", [None, 0, 3])
# float32 through the IEEE dot; bfloat16 through the 16-bit dot, whose products are exact in float32 too
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_routers_match_the_reference_with_exact_ties(router, n_experts, n_groups, logit_splits, dtype):
    config, x, w, bias = _tied_router_problem(n_experts, n_groups, tokens=37)  # not a multiple of the 16-token block
    args = config, x.to(dtype), w.to(dtype), bias
    experts, weights = triton_moe.route(router, *args, logit_splits=logit_splits)
    ref_experts, ref_weights = route(router, *args)
    assert torch.equal(experts.long(), ref_experts)
    assert torch.allclose(weights, ref_weights, atol=1e-6)


def _tied_router_problem(n_experts, n_groups, tokens):
    from variantbench.shapes import MoEConfig

    config = MoEConfig("t", n_experts=n_experts, top_k=3, dim=200, ffn_dim=32, n_groups=n_groups, topk_groups=2,
                       routed_scale=2.5)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(tokens, 200, generator=gen)  # dim not a multiple of the 64 a load
    w = torch.randn(n_experts, 200, generator=gen)
    w[5] = w[2]  # experts 2 and 5 score identically for every token
    w[6] = w[1]
    return config, x, w, torch.zeros(n_experts)  # equal biases keep the ties exact


@pytest.mark.parametrize("router", ["softmax_topk", "sigmoid_grouped_topk"])
@pytest.mark.parametrize("tokens, split", [(16, True), (48, True), (49, False), (83, False)])
def test_triton_route_splits_the_logits_only_while_token_blocks_leave_sms_idle(monkeypatch, router, tokens, split):
    """On the CPU (4 "SMs") decode-like counts (up to 3 blocks of 16 tokens) launch the logits
    programs, prefill-like ones (a block per SM) route in a single pass; both as the reference."""
    launched = []
    logits_kernel = triton_moe._router_logits_kernel

    class Spy:
        def __getitem__(self, grid):
            launched.append(grid)
            return logits_kernel[grid]

    monkeypatch.setattr(triton_moe, "_router_logits_kernel", Spy())
    args = _tied_router_problem(32, 8, tokens)
    experts, weights = triton_moe.route(router, *args)
    assert bool(launched) == split
    ref_experts, ref_weights = route(router, *args)
    assert torch.equal(experts.long(), ref_experts)
    # 32 experts' softmax of logits of spread ~14 (dim 200): up to 3e-6 apart from the reference's
    # float32 sums in another order, on either path alike
    assert torch.allclose(weights, ref_weights, atol=1e-5)


@pytest.mark.parametrize("tokens, n_experts, dim, splits", [
    (16, 256, 7168, 9),  # DeepSeek-V3 decode: 1 x 16 blocks, 9 slices (144 programs); gated 0.84x main
    (16, 8, 4096, 8),  # Mixtral-8x7B decode: 1 x 1 block (8 experts pad to 16), 4096 // 512 slices; gated 0.95x
    (2096, 256, 7168, 1),  # 131 token blocks, one SM idle in a single pass: split, 131 x 16 blocks in one slice
    (2097, 256, 7168, 0),  # 132 token blocks, a wave on their own: the single pass
    (4096, 256, 7168, 0),  # DeepSeek-V3 prefill: gated 1.22x main split, so the single pass
])
def test_logit_split_plans_on_an_h200(monkeypatch, tokens, n_experts, dim, splits):
    monkeypatch.setattr(triton_moe, "multiprocessors", lambda device: 132)
    e_pad = max(16, 1 << (n_experts - 1).bit_length())
    assert triton_moe.plan_logit_splits(tokens, e_pad, dim, torch.device("cuda")) == splits


@pytest.mark.parametrize("kernel, rows, dim, plan", [
    # DeepSeek-V3 decode: the unpermute's 16 tokens 2 blocks of 8, 56 slices of 128 columns, 128 a load
    ("unpermute", 16, 7168, ((2, 56), 128, 128)),
    ("permute", 128, 7168, ((8, 16), 448, 64)),  # its 128 routed rows: slices of 7 loads of 64 (448 = 7 x 64)
    ("unpermute", 16, 4096, ((2, 64), 64, 64)),  # Mixtral-8x7B decode
    ("permute", 32768, 7168, ((2048, 1), 7168, 128)),  # DeepSeek-V3 prefill: whole rows
    ("unpermute", 4096, 7168, ((512, 1), 7168, 512)),
])
def test_permute_and_unpermute_plans_on_an_h200(monkeypatch, kernel, rows, dim, plan):
    """(grid, columns a program, columns a load) at the tilings session 36 measured best at prefill."""
    monkeypatch.setattr(triton_moe, "multiprocessors", lambda device: 132)
    tiling = {"permute": triton_moe.PERMUTE_TILING, "unpermute": triton_moe.UNPERMUTE_TILING}[kernel]
    assert triton_moe.sliced(rows, dim, torch.device("cuda"), tiling) == plan


# On the CPU (4 SMs by multiprocessors) the row blocks decide the slices: 5 tokens route 10 rows, one block
# of either kernel, so 96 columns are two slices of 64 (the second half a load) and 200 four; 20 and 40
# tokens give 3 to 5 blocks: two slices of 128 columns, or one of 256 (200 columns, the last load partial).
@pytest.mark.parametrize("tokens, dim", [(5, 96), (5, 200), (20, 200), (40, 200)])
def test_permute_then_unpermute_with_unit_weights_sums_each_tokens_rows(tokens, dim):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(tokens, dim, generator=gen)
    experts = torch.randint(0, 4, (tokens, 2), generator=gen, dtype=torch.int32)
    order = torch.argsort(experts.flatten().long(), stable=True)
    position = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel())).view(tokens, 2).to(torch.int32)
    rows = triton_moe.permute(x, (order // 2).to(torch.int32))
    assert torch.equal(rows, x[order // 2])
    y = triton_moe.unpermute(rows, position, torch.full((tokens, 2), 0.5), tokens, torch.float32)
    assert torch.allclose(y, x)


@pytest.mark.parametrize("tokens", [1, 3, 64])
@pytest.mark.parametrize("variant", ["softmax_topk", "sigmoid_grouped_topk"])
def test_triton_layer_matches_the_reference(variant, tokens):
    v = FAMILY.variant(variant)
    problem = FAMILY.make_problem(v, MoEShape("t", "tiny-moe", tokens, "zipf", device="cpu"),
                                  device=torch.device("cpu"), dtype=torch.float32, seed=13)
    out = triton_moe.prepare(v, problem)()
    exact = moe(v.router, TINY, problem.x, problem.router_weight, problem.selection_bias, problem.w13, problem.w2,
                problem.shared13, problem.shared2, compute_dtype=torch.float64)
    assert torch.allclose(out.double(), exact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_experts", [1, 8, 256])
def test_expert_offsets_end_each_experts_rows_even_where_experts_get_none(n_experts):
    """The grouped GEMM's offsets, found on the device: equal to bincount's running sum, with the
    experts no token reached (the zipf load leaves many) and the last ones empty."""
    from kernels.moe.grouped_mm import expert_offsets

    experts = torch.randint(0, max(1, n_experts // 2), (64, 2), generator=torch.Generator().manual_seed(3))
    flat = experts.flatten()
    want = torch.cumsum(torch.bincount(flat, minlength=n_experts), 0).to(torch.int32)
    got = expert_offsets(flat.sort().values, n_experts)
    assert got.dtype == torch.int32 and torch.equal(got, want)


def test_the_timed_load_is_the_shapes_load_not_the_check_seeds_router_against_the_timing_seeds_tokens():
    """prepare_checked refills the tokens from the timing seed and keeps the check seed's router: the zipf
    skew lives in both (tokens and router rows share a load direction), so where each seed drew its own
    direction the timed load was near uniform (hottest expert 1.11x fair at 8 experts where the shape
    names 3x, 2.15x at 128 where 15x)."""
    from variantbench import cases

    case = cases.resolve("moe", "softmax_topk", "reference", "tiny-moe-t64-zipf", "cpu")
    problem, _, _ = cases.prepare_checked(case)
    timed = FAMILY.make_problem(case.variant, case.shape, device=torch.device("cpu"), dtype=case.dtype,
                                seed=problem.seed)
    assert torch.equal(problem.x, timed.x)  # the timing seed's tokens
    experts, _ = route("softmax_topk", TINY, problem.x, problem.router_weight, problem.selection_bias)
    as_timed = torch.bincount(experts.flatten(), minlength=TINY.n_experts).float() / experts.numel()
    experts, _ = route("softmax_topk", TINY, timed.x, timed.router_weight, timed.selection_bias)
    as_named = torch.bincount(experts.flatten(), minlength=TINY.n_experts).float() / experts.numel()
    assert as_timed.max() > 2.5 / TINY.n_experts and as_named.max() > 2.5 / TINY.n_experts
    assert as_timed.argmax() in as_named.topk(2).indices  # the shape's hot experts, whichever seed


def test_expert_order_puts_rows_in_expert_order_and_finds_each_pairs_row():
    """Rows in expert order, an expert's in token order (the stable sort); each (token, slot) pair's row
    holds that token: the layer's permute reads source, its unpermute position."""
    gen = torch.Generator().manual_seed(2)
    experts = torch.randint(0, 5, (9, 3), generator=gen)
    order, source, position = triton_moe.expert_order(experts.flatten(), 3)
    assert source.dtype == position.dtype == torch.int32 and position.shape == (9, 3)
    keys = [(int(experts.flatten()[i]), int(i) // 3) for i in order]
    assert keys == sorted(keys)
    assert source.tolist() == [i // 3 for i in order.tolist()]
    rows_token = source[position.long()]
    assert torch.equal(rows_token, torch.arange(9, dtype=torch.int32)[:, None].expand(9, 3))
    assert torch.equal(experts.flatten()[order][position.long().flatten()], experts.flatten())
