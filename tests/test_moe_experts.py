"""Our grouped expert GEMMs (kernels/moe/triton_experts.py) on the CPU, through the interpreter: the
tile schedule on its own, each kernel against a float64 product per expert (empty experts, one of more
than two row tiles, float32 and bfloat16), and the layer through the suite's check on both of its
expert paths."""

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from kernels.moe import triton_experts as te  # noqa: E402
from kernels.moe import triton_moe  # noqa: E402
from reference.moe import moe, route  # noqa: E402
from variantbench import cases  # noqa: E402
from variantbench.catalog import family  # noqa: E402
from variantbench.shapes import MoEShape, moe_model  # noqa: E402

FAMILY = family("moe")
# rows an expert: empty ones first, between and last; one over two row tiles (BLOCK_M 64), one partial,
# one of a single row, one exactly a tile
LOADS = {"uneven": [0, 150, 3, 0, 64, 1, 0], "one expert": [40], "all empty but one": [0, 0, 0, 2 * te.GATE_UP_TILES.m + 1]}


def offsets_of(counts):
    return torch.tensor(counts).cumsum(0).to(torch.int32)


@triton.jit
def _schedule_kernel(offsets_ptr, out_ptr, least, most, N_BLOCKS: tl.constexpr, N_EXPERTS: tl.constexpr,
                     E_PAD: tl.constexpr, BLOCK_M: tl.constexpr):
    pid = tl.program_id(0)
    live, expert, row, row_end, n_block = te._tile(offsets_ptr, pid, least, most, N_BLOCKS, N_EXPERTS, E_PAD, BLOCK_M)
    if live:
        tl.store(out_ptr + pid * 4 + 0, expert)
        tl.store(out_ptr + pid * 4 + 1, row)
        tl.store(out_ptr + pid * 4 + 2, row_end)
        tl.store(out_ptr + pid * 4 + 3, n_block)


def schedule(counts, n_cols, serving=te.EVERY_EXPERT, tiles=te.GATE_UP_TILES):
    """[(expert, first row, the expert's row end, n-block)] of each live program, in program order."""
    programs, n_blocks = te._grid(sum(counts), len(counts), n_cols, tiles, serving[0])
    out = torch.full((programs, 4), -1, dtype=torch.int32)
    _schedule_kernel[(programs,)](offsets_of(counts), out, *serving, N_BLOCKS=n_blocks, N_EXPERTS=len(counts),
                                  E_PAD=triton.next_power_of_2(len(counts)), BLOCK_M=tiles.m)
    return [tuple(r) for r in out.tolist()]


@pytest.mark.parametrize("load", LOADS)
@pytest.mark.parametrize("n_cols", [64, 3 * te.GATE_UP_TILES.n - 5])  # one n-block; three, the last partial
def test_the_schedule_runs_expert_by_expert_then_n_block_then_m_tile(load, n_cols):
    """Consecutive programs share an expert's weight tile (same expert and n-block, the next m-tile);
    every real tile once; the programs past them (the grid's upper bound) do nothing."""
    counts, m = LOADS[load], te.GATE_UP_TILES.m
    n_blocks = -(-n_cols // te.GATE_UP_TILES.n)
    start, want = 0, []
    for expert, rows in enumerate(counts):
        want += [(expert, start + tile * m, start + rows, n) for n in range(n_blocks) for tile in range(-(-rows // m))]
        start += rows
    got = schedule(counts, n_cols)
    assert got[:len(want)] == want
    assert set(got[len(want):]) <= {(-1, -1, -1, -1)}


# hot experts: one of exactly HOT_ROWS rows, one over two hot tiles; cold ones around them, one a row short
SPLIT_LOAD = [0, te.HOT_ROWS, 7, te.HOT_ROWS - 1, 0, 2 * te.SHARES[0].tiles.m + 3, 1]


@pytest.mark.parametrize("share", range(len(te.SHARES)))
def test_a_share_schedules_the_tiles_of_its_experts_alone(share):
    """Each of SHARES' gate_up launches walks, in the same order, the tiles of the experts of its rows and
    no other's, within its grid; together they cover every expert once."""
    least, most, tiles = te.SHARES[share]
    n_blocks, start, want = 2, 0, []
    for expert, rows in enumerate(SPLIT_LOAD):
        if least <= rows < most:
            want += [(expert, start + tile * tiles.m, start + rows, n) for n in range(n_blocks)
                     for tile in range(-(-rows // tiles.m))]
        start += rows
    got = schedule(SPLIT_LOAD, n_blocks * tiles.n, (least, most), tiles)
    assert got[:len(want)] == want and set(got[len(want):]) <= {(-1, -1, -1, -1)}
    served = [sum(s.least <= rows < s.most for s in te.SHARES) for rows in SPLIT_LOAD if rows]
    assert served == [1] * len(served)


TILINGS = {"gate_up": te.GATE_UP_TILES, "gate_up hot": te.SHARES[0].tiles, "down few": te.DOWN_TILES_FEW,
           "down many": te.DOWN_TILES_MANY}


@pytest.mark.parametrize("tiling", TILINGS)
@pytest.mark.parametrize("seed", range(20))
def test_the_grid_bounds_the_tiles_of_any_load(seed, tiling):
    """cdiv(R, BLOCK_M) + min(E, R) m-tiles: at least the experts' own, each non-empty one's partial
    tile included (the worst: every expert one row past a whole tile, or one row each)."""
    tiles = TILINGS[tiling]
    gen = torch.Generator().manual_seed(seed)
    n_experts = int(torch.randint(1, 300, (), generator=gen))
    counts = torch.randint(0, 3 * tiles.m, (n_experts,), generator=gen)
    counts[torch.rand(n_experts, generator=gen) < 0.3] = 0
    for load in (counts.tolist(), [tiles.m + 1] * n_experts, [1] * n_experts):
        programs, n_blocks = te._grid(sum(load), len(load), 1, tiles)
        assert programs >= sum(-(-c // tiles.m) for c in load)
        # a share of the experts of `least` rows or more: at most R // least of them, one partial tile each
        for least in (2, tiles.m - 1, tiles.m + 1, 3 * tiles.m, te.HOT_ROWS):
            programs, n_blocks = te._grid(sum(load), len(load), 1, tiles, least)
            assert programs >= sum(-(-c // tiles.m) for c in load if c >= least)


def expert_problem(counts, dim, ffn, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n_experts, n_rows = len(counts), sum(counts)
    rows = torch.randn(n_rows, dim, generator=gen).to(dtype)
    w13 = (torch.randn(n_experts, 2 * ffn, dim, generator=gen) / dim ** 0.5).to(dtype)
    w2 = (torch.randn(n_experts, dim, ffn, generator=gen) / ffn ** 0.5).to(dtype)
    return rows, w13, w2


def per_expert(counts, rows, weights, product):
    """product(an expert's rows, its weight) in float64, expert by expert."""
    return torch.cat([product(r.double(), w.double()) for r, w in zip(rows.split(counts), weights.unbind(0))])


def swiglu(rows, w13):
    gate, up = (rows @ w13.T).chunk(2, dim=-1)  # gate columns first, as reference/moe.py's swiglu
    return F.silu(gate) * up


def assert_rounded_once(got, exact):
    """float32: the IEEE dot's sums; bfloat16: float32 sums rounded once to nearest (2^-8 relative
    at most; the interpreter truncates unless told to round, up to 2^-7)."""
    rtol = 2 ** -8 if got.dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got.double(), exact, rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("load", LOADS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# dim 96: a full and a partial K step; ffn 160: a full and a partial n-block of gate and of up
def test_gate_up_is_silu_of_gate_times_up_per_expert(load, dtype):
    counts = LOADS[load]
    rows, w13, _ = expert_problem(counts, dim=96, ffn=160, dtype=dtype)
    hidden = te.gate_up(rows, w13, offsets_of(counts))
    assert hidden.shape == (sum(counts), 160) and hidden.dtype == dtype
    assert_rounded_once(hidden, per_expert(counts, rows, w13, swiglu))


@pytest.mark.parametrize("tiles", [te.DOWN_TILES_FEW, te.DOWN_TILES_MANY], ids=["few", "many"])
@pytest.mark.parametrize("load", LOADS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
# dim 300: whole n-blocks and a partial one of the output at either tiling; ffn 80: a full and a
# partial K step
def test_down_is_each_experts_product(load, dtype, tiles):
    counts = LOADS[load]
    hidden, _, w2 = expert_problem(counts, dim=300, ffn=80, dtype=dtype)
    hidden = hidden[:, :80].contiguous()
    out = te.down(hidden, w2, offsets_of(counts), tiles)
    assert out.shape == (sum(counts), 300) and out.dtype == dtype
    assert_rounded_once(out, per_expert(counts, hidden, w2, lambda h, w: h @ w.T))


@pytest.mark.parametrize("share", range(len(te.SHARES)))
def test_a_share_writes_the_rows_of_its_experts_alone(share):
    """gate_up serving one share writes its experts' rows into out and leaves every other row."""
    least, most, tiles = te.SHARES[share]
    rows, w13, _ = expert_problem(SPLIT_LOAD, dim=32, ffn=48, dtype=torch.float32)
    mine = torch.tensor([least <= c < most for c in SPLIT_LOAD]).repeat_interleave(torch.tensor(SPLIT_LOAD))
    hidden = torch.full((len(rows), 48), float("nan"))
    assert te.gate_up(rows, w13, offsets_of(SPLIT_LOAD), tiles, serving=(least, most), out=hidden) is hidden
    assert hidden[mine].isfinite().all() and hidden[~mine].isnan().all()
    assert_rounded_once(hidden[mine], per_expert(SPLIT_LOAD, rows, w13, swiglu)[mine])


def test_experts_averaging_many_rows_go_through_every_share(monkeypatch):
    """Past MANY_ROWS an expert on average (prefill), gate_up takes the hot and the cold experts in
    a launch each, down all of them in one: the SwiGLU of every row against float64."""
    rows, w13, w2 = expert_problem(SPLIT_LOAD, dim=32, ffn=48, dtype=torch.float32)
    assert len(rows) >= te.MANY_ROWS * len(SPLIT_LOAD)
    launches = []
    for name in ("gate_up", "down"):
        monkeypatch.setattr(te, name, lambda *a, _run=getattr(te, name), _name=name, **k:
                            launches.append((_name, k.get("serving"))) or _run(*a, **k))
    out = te.experts(rows, w13, w2, offsets_of(SPLIT_LOAD))
    exact = per_expert(SPLIT_LOAD, per_expert(SPLIT_LOAD, rows, w13, swiglu), w2, lambda h, w: h @ w.T)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)
    assert launches == [("gate_up", (s.least, s.most)) for s in te.SHARES] + [("down", None)]


def test_a_share_no_expert_can_fill_launches_nothing():
    programs, _ = te._grid(100, 4, 64, te.SHARES[0].tiles, least=101)
    assert programs == 0


def test_a_wrong_out_or_share_is_refused_in_one_line():
    rows, w13, w2 = expert_problem([3, 2], dim=16, ffn=16, dtype=torch.float32)
    for out in (torch.empty(5, 8), torch.empty(5, 16, dtype=torch.float64), torch.empty(16, 5).T):
        with pytest.raises(ValueError, match="out must be contiguous"):
            te.gate_up(rows, w13, offsets_of([3, 2]), out=out)
    for serving in ((0, 10), (5, 4), (1, 2 ** 31)):
        with pytest.raises(ValueError, match="serving must be"):
            te.gate_up(rows, w13, offsets_of([3, 2]), serving=serving)


def test_down_takes_the_wide_tiles_where_experts_average_many_rows():
    many = te.MANY_ROWS * 256  # DeepSeek-V3's 256 experts
    assert te.down_tiles(many, 256) == te.DOWN_TILES_MANY
    assert te.down_tiles(many - 1, 256) == te.DOWN_TILES_FEW
    assert te.down_tiles(16 * 8, 256) == te.DOWN_TILES_FEW  # decode: 16 tokens, top 8


def test_serves_few_rows_an_expert():
    _, w13, w2 = expert_problem([1] * 4, dim=8, ffn=8, dtype=torch.float32)
    most = te.EXPERT_GEMM_MAX_ROWS * 4  # the average, known on the host from the row count
    assert te.serves(torch.empty(most, 8), w13, w2)
    assert not te.serves(torch.empty(most + 1, 8), w13, w2)


def test_no_routed_rows_launch_nothing_and_give_no_rows():
    _, w13, w2 = expert_problem([0, 0], dim=16, ffn=16, dtype=torch.bfloat16)
    out = te.experts(torch.empty(0, 16, dtype=torch.bfloat16), w13, w2, offsets_of([0, 0]))
    assert out.shape == (0, 16) and out.dtype == torch.bfloat16


@pytest.fixture
def expert_calls(monkeypatch):
    """How often the layer called our expert GEMMs."""
    calls = []
    run = te.experts
    monkeypatch.setattr(te, "experts", lambda *args: calls.append(1) or run(*args))
    return calls


@pytest.mark.parametrize("max_rows, ours", [(te.EXPERT_GEMM_MAX_ROWS, True), (0, False)])
@pytest.mark.parametrize("variant", ["softmax_topk", "sigmoid_grouped_topk"])
def test_the_layer_matches_the_reference_on_either_expert_path(monkeypatch, expert_calls, variant, max_rows, ours):
    """tiny-moe at 64 tokens routes 16 rows an expert: ours; with no rows allowed, torch._grouped_mm."""
    monkeypatch.setattr(te, "EXPERT_GEMM_MAX_ROWS", max_rows)
    v, config = FAMILY.variant(variant), moe_model("tiny-moe")
    problem = FAMILY.make_problem(v, MoEShape("t", "tiny-moe", 64, "zipf", device="cpu"), device=torch.device("cpu"),
                                  dtype=torch.float32, seed=13)
    out = triton_moe.prepare(v, problem)()
    assert bool(expert_calls) == ours
    exact = moe(v.router, config, problem.x, problem.router_weight, problem.selection_bias, problem.w13, problem.w2,
                problem.shared13, problem.shared2, compute_dtype=torch.float64)
    assert torch.allclose(out.double(), exact, atol=1e-5, rtol=1e-4)


def test_the_layer_at_many_rows_an_expert_goes_through_every_share(monkeypatch):
    """tiny-moe at 512 tokens routes 128 rows an expert on average (zipf: some over HOT_ROWS): the layer
    takes gate_up's shares, and matches the float64 reference."""
    launches = []
    run = te.gate_up
    monkeypatch.setattr(te, "gate_up", lambda *a, **k: launches.append(k.get("serving")) or run(*a, **k))
    v, config = FAMILY.variant("softmax_topk"), moe_model("tiny-moe")
    problem = FAMILY.make_problem(v, MoEShape("t", "tiny-moe", 512, "zipf", device="cpu"), device=torch.device("cpu"),
                                  dtype=torch.float32, seed=13)
    out = triton_moe.prepare(v, problem)()
    assert launches and set(launches) == {(s.least, s.most) for s in te.SHARES}
    experts, _ = route(v.router, config, problem.x, problem.router_weight, problem.selection_bias)
    counts = torch.bincount(experts.flatten(), minlength=config.n_experts)
    assert (counts >= te.HOT_ROWS).any() and ((counts > 0) & (counts < te.HOT_ROWS)).any()
    exact = moe(v.router, config, problem.x, problem.router_weight, problem.selection_bias, problem.w13, problem.w2,
                problem.shared13, problem.shared2, compute_dtype=torch.float64)
    assert torch.allclose(out.double(), exact, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("variant", ["softmax_topk", "sigmoid_grouped_topk"])
def test_the_layer_through_our_experts_passes_the_suites_check(expert_calls, variant, dtype):
    """The suite's check (4x the working-dtype reference's error against float64): in bfloat16 too,
    where the reference rounds gate and up before the SwiGLU and our epilogue does not."""
    case = cases.resolve("moe", variant, "triton", "tiny-moe-t64-zipf", "cpu")
    problem = FAMILY.make_problem(case.variant, case.shape, device=torch.device("cpu"), dtype=dtype, seed=cases.SEED)
    result = cases.check_output(case, problem, triton_moe.prepare(case.variant, problem)())
    assert expert_calls and result["ok"], result


def test_gate_up_operands_the_copy_engine_cannot_read_go_to_torch_or_fail_in_one_line():
    # rows of 12 bfloat16 values are 24 bytes apart: not a multiple of 16, so no tensor descriptor
    rows, w13, w2 = expert_problem([2, 3], dim=12, ffn=16, dtype=torch.bfloat16)
    with torch.no_grad():
        assert not te.serves(rows, w13, w2)
        with pytest.raises(ValueError, match="multiples of 16 bytes"):
            te.gate_up(rows, w13, offsets_of([2, 3]))
    rows, w13, w2 = expert_problem([2, 3], dim=16, ffn=16, dtype=torch.bfloat16)
    with torch.no_grad():
        assert te.serves(rows, w13, w2)
        assert not te.serves(rows, w13.transpose(1, 2).contiguous().transpose(1, 2), w2)  # K strided
        # every stride a multiple of 16 bytes, but the experts' rows not one matrix: no (E x 2 ffn, dim) view
        gapped = torch.cat([w13, w13], dim=1)[:, :w13.shape[1]]
        assert not te.serves(rows, gapped, w2)
        with pytest.raises(ValueError, match="w13 must be contiguous"):
            te.gate_up(rows, gapped, offsets_of([2, 3]))
        assert not te.serves(rows, w13, w2.transpose(1, 2).contiguous().transpose(1, 2))  # down's K strided
        # a base one element past 16-byte alignment
        shifted = torch.empty(rows.numel() + 1, dtype=rows.dtype)[1:].view_as(rows).copy_(rows)
        assert not te.serves(shifted, w13, w2)
        with pytest.raises(ValueError, match="16-byte-aligned base"):
            te.gate_up(shifted, w13, offsets_of([2, 3]))
        # one row 40 bytes on to the next: torch calls it contiguous (a size-1 dim's stride is ignored),
        # the copy engine does not
        one = torch.cat([rows[:1], rows[:1, :4]], dim=1)[:, :16]
        assert one.is_contiguous() and not te.serves(one, w13, w2)
        with pytest.raises(ValueError, match="multiples of 16 bytes"):
            te.gate_up(one, w13, offsets_of([1, 0]))
