"""Paged-KV decode: the seeded fragmented layout, the reference against attention over the same keys
laid out contiguously, our kernel equal to itself on a shuffled page table (exactly) and to the float64
reference at lengths of 1 and of exactly a page, Flex's BlockMask made from the page table, the work
model, and every implementation against the reference. Our launch plans: every candidate the tuner
tries against the reference, the split counts they ask for, and the tuner's pick from injected
timings (never the clock)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from triton.runtime.errors import OutOfResources

from kernels.paged import triton_paged
from reference import paged as reference
from reference.attention import attention
from variantbench import cases
from variantbench.catalog import family
from variantbench.catalog.paged import layout
from variantbench.shapes import PagedShape

PAGED = family("paged")


def cache(lengths, page_size, *, shuffled, seed=0, heads=(8, 2), dim=16, dtype=torch.float64):
    """(q, k_pool, v_pool, table, lens, contiguous k, v): the same logical keys and values, stored page by
    page in order, or in shuffled pages with free ones between."""
    gen = torch.Generator().manual_seed(seed)
    n_q, n_kv = heads
    longest = max(lengths)
    k = torch.randn(len(lengths), n_kv, longest, dim, generator=gen, dtype=dtype)
    v = torch.randn(len(lengths), n_kv, longest, dim, generator=gen, dtype=dtype)
    q = torch.randn(len(lengths), n_q, 1, dim, generator=gen, dtype=dtype)
    pages = [-(-n // page_size) for n in lengths]
    pool_pages = sum(pages) + 3
    order = torch.randperm(pool_pages, generator=gen) if shuffled else torch.arange(pool_pages)
    k_pool = torch.zeros(1, n_kv, pool_pages * page_size, dim, dtype=dtype)
    v_pool = torch.zeros_like(k_pool)
    table = torch.zeros(len(lengths), max(pages), dtype=torch.int32)
    used = 0
    for b, n in enumerate(lengths):
        for i in range(pages[b]):
            page = int(order[used])
            used += 1
            table[b, i] = page
            keys = slice(i * page_size, min((i + 1) * page_size, n))
            count = keys.stop - keys.start
            k_pool[0, :, page * page_size:page * page_size + count] = k[b, :, keys]
            v_pool[0, :, page * page_size:page * page_size + count] = v[b, :, keys]
    return q, k_pool, v_pool, table, torch.tensor(lengths, dtype=torch.int32), k, v


LENGTHS = [1, 16, 37, 5]  # one token, exactly a page, several pages and a partial one, under a page


def test_the_reference_is_decode_over_each_sequences_own_keys():
    q, k_pool, v_pool, table, lens, k, v = cache(LENGTHS, 16, shuffled=True)
    out = reference.paged_decode(q, k_pool, v_pool, table, lens, 16)
    for b, n in enumerate(LENGTHS):
        expected = attention(q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n])
        torch.testing.assert_close(out[b:b + 1], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_splits", [1, 3])
@pytest.mark.parametrize("page_size", [4, 16])
def test_our_kernel_reads_a_shuffled_page_table_exactly_as_a_contiguous_one(page_size, n_splits):
    from kernels.paged.triton_paged import paged_launcher

    runs = []
    for shuffled in (False, True):
        q, k_pool, v_pool, table, lens, _, _ = cache(LENGTHS, page_size, shuffled=shuffled, dtype=torch.float32)
        runs.append(paged_launcher(q, k_pool, v_pool, table, lens, page_size, n_splits=n_splits)())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("n_splits", [1, 2, 5])
@pytest.mark.parametrize("page_size", [4, 16])
def test_our_kernel_matches_the_float64_reference(page_size, n_splits):
    from kernels.paged.triton_paged import paged_launcher

    q, k_pool, v_pool, table, lens, _, _ = cache(LENGTHS, page_size, shuffled=True, dtype=torch.float32)
    got = paged_launcher(q, k_pool, v_pool, table, lens, page_size, n_splits=n_splits)()
    expected = reference.paged_decode(q.double(), k_pool.double(), v_pool.double(), table, lens, page_size)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


# One token, exactly a page, an odd length over 64 pages (page 16): every candidate's tiles loop, and
# its programs per SM split the 4 x 2 pairs over the CPU's 4 "SMs" (2: whole; 4: 2 ranges; 8: 3 or 4).
LONG_LENGTHS = [1, 16, 1029, 37]


@pytest.mark.parametrize("plan", triton_paged.CANDIDATES, ids=str)
def test_every_candidate_plan_matches_the_float64_reference(plan):
    q, k_pool, v_pool, table, lens, _, _ = cache(LONG_LENGTHS, 16, shuffled=True, dtype=torch.float32)
    launcher = triton_paged.paged_launcher(q, k_pool, v_pool, table, lens, 16, plan=plan)
    assert launcher.plan == plan and (launcher.n_splits > 1) == (plan.programs_per_sm > 2)
    expected = reference.paged_decode(q.double(), k_pool.double(), v_pool.double(), table, lens, 16)
    torch.testing.assert_close(launcher().double(), expected, rtol=1e-5, atol=1e-6)


def test_the_candidates_split_an_h200_as_their_comment_says(monkeypatch):
    monkeypatch.setattr(triton_paged, "multiprocessors", lambda device: 132)
    cpu = torch.device("cpu")
    assert [triton_paged.plan_splits(1, 8, 131072, cpu, n) for n in (2, 4, 8)] == [33, 66, 132]
    assert [triton_paged.plan_splits(64, 8, 8192, cpu, n) for n in (2, 4, 8)] == [1, 2, 3]
    assert triton_paged.plan_splits(1, 8, 1024, cpu, 8) == 4  # no split under MIN_SPLIT_KEYS (256)


def test_the_default_plan_is_the_first_of_at_most_16_candidates():
    candidates = triton_paged.CANDIDATES
    assert candidates[0] == triton_paged.DEFAULT_PLAN and len(set(candidates)) == len(candidates) <= 16


def apart(plan):
    """A fake launcher for the tuner: every plan launches apart from every other, so each is timed."""
    return type("Launch", (), {"plan": plan, "launch_key": plan})


def test_the_tuner_picks_the_fastest_of_the_timed_plans():
    candidates = triton_paged.CANDIDATES
    fake_ms = {plan: 1.0 + abs(i - 7) / 10 for i, plan in enumerate(candidates)}  # least at the 8th
    timed = []

    def time(launcher):
        timed.append(launcher.plan)
        return fake_ms[launcher.plan]

    plan, timings = triton_paged.tune_plan(apart, time=time)
    assert plan == candidates[7] and timed == list(candidates) and timings == fake_ms


def test_of_equal_times_the_tuner_keeps_the_first_the_default_plan():
    candidates = triton_paged.CANDIDATES
    assert triton_paged.fastest({plan: 0.2 for plan in candidates}) == triton_paged.DEFAULT_PLAN
    assert triton_paged.fastest({candidates[3]: 0.3, candidates[1]: 0.1, candidates[2]: 0.1}) == candidates[1]


def test_the_tuner_leaves_out_plans_that_overflow_shared_memory():
    candidates = triton_paged.CANDIDATES
    overflow = [p for p in candidates if p.block_n * p.num_stages > 256]  # 192 KB tiles on a 163 KB A100

    def time(launcher):
        if launcher.plan in overflow:
            raise OutOfResources(192 * 1024, 163 * 1024, "shared memory")
        return 0.5 if launcher.plan == candidates[6] else 1.0

    plan, timings = triton_paged.tune_plan(apart, time=time)
    assert len(overflow) == 3 and plan == candidates[6] and set(timings) == set(candidates) - set(overflow)


def test_the_tuner_times_plans_that_launch_alike_once():
    """Under 256 keys (MIN_SPLIT_KEYS) no programs per SM splits: of the 15 plans, the 5 tiles launch."""
    q, k_pool, v_pool, table, lens, _, _ = cache(LENGTHS, 16, shuffled=True, dtype=torch.float32)

    def build(plan):
        return triton_paged.paged_launcher(q, k_pool, v_pool, table, lens, 16, plan=plan)

    plan, timings = triton_paged.tune_plan(build, time=lambda launcher: 1.0)
    assert plan == triton_paged.DEFAULT_PLAN
    assert [(p.programs_per_sm, p.block_n, p.num_warps, p.num_stages) for p in timings] == \
        [(2, *tile) for tile in triton_paged.TILES]


def test_the_interpreter_takes_its_fixed_plan_untimed(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the CPU times no plan")

    monkeypatch.setattr(triton_paged, "tune_plan", refuse)
    problem = PAGED.make_problem(PAGED.variant("gqa_decode"), PAGED.shape("tiny-paged16-b2-kv32"), device="cpu",
                                 dtype=torch.float32, seed=1)
    launcher = triton_paged.prepare(PAGED.variant("gqa_decode"), problem)
    assert launcher.plan == triton_paged.INTERPRETER_PLAN
    assert launcher.backend == f"triton ({triton_paged.INTERPRETER_PLAN}, {launcher.n_splits} splits)"


def test_an_explicit_split_count_and_tile_override_the_plan():
    q, k_pool, v_pool, table, lens, _, _ = cache(LONG_LENGTHS, 16, shuffled=True, dtype=torch.float32)
    plan = triton_paged.DEFAULT_PLAN
    launcher = triton_paged.paged_launcher(q, k_pool, v_pool, table, lens, 16, plan=plan, n_splits=3, block_n=32)
    assert launcher.plan.block_n == 32 and launcher.n_splits == 3
    assert launcher.launch_key == (3, 352, 32, plan.num_warps, plan.num_stages)  # 1029 / 3 keys, whole tiles


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the probe times plans")
def test_the_probe_says_in_one_line_that_it_needs_a_gpu():
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "tools" / "probe_paged.py")], capture_output=True, text=True,
                         env={"PYTHONPATH": str(root)}, cwd=root)
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.splitlines()) == 1 and "no CUDA GPU" in run.stderr


def test_the_layout_is_seeded_by_the_shape_fragmented_and_leaves_pages_free():
    shape = PagedShape("t", "tiny", batch=6, kv_len=100, page_size=8, lengths="mixed", device="cpu")
    lengths, table, pool_pages = layout(shape)
    again = layout(shape)
    assert torch.equal(lengths, again[0]) and torch.equal(table, again[1])
    assert len(set(lengths.tolist())) > 1 and int(lengths.min()) >= 12
    used = torch.cat([table[b, :-(-int(n) // 8)] for b, n in enumerate(lengths)])
    assert used.unique().numel() == used.numel() < pool_pages  # no page twice, some free
    first = table[0, :-(-int(lengths[0]) // 8)]
    assert bool((first.diff() != 1).any())  # a sequence's pages are not one run


def test_flex_block_mask_has_the_full_pages_full_and_the_last_partial():
    from kernels.paged.flex import page_block_mask

    shape = PagedShape("t", "tiny", batch=3, kv_len=37, page_size=4, lengths="mixed", device="cpu")
    problem = PAGED.make_problem(PAGED.variant("gqa_decode"), shape, device="cpu", dtype=torch.float32, seed=1)
    mask = page_block_mask(problem)
    for b, n in enumerate(problem.seq_lens.tolist()):
        full = mask.full_kv_indices[b, 0, 0, :int(mask.full_kv_num_blocks[b, 0, 0])]
        assert torch.equal(full, problem.page_table[b, :n // 4])
        assert int(mask.kv_num_blocks[b, 0, 0]) == (n % 4 != 0)
        if n % 4:
            assert int(mask.kv_indices[b, 0, 0, 0]) == int(problem.page_table[b, n // 4])
    # Flex's fused kernels read the full list with the partial list's strides and length (its Triton
    # templates): where the two differ, every full block read the wrong page on the H200.
    assert mask.kv_indices.shape == mask.full_kv_indices.shape
    assert mask.kv_indices.stride() == mask.full_kv_indices.stride()


def test_the_work_model_counts_every_sequences_keys_once():
    shape = PAGED.shape("tiny-paged4-b3-mixed37")
    problem = PAGED.make_problem(PAGED.variant("gqa_decode"), shape, device="cpu", dtype=torch.float32, seed=1)
    tokens = int(problem.seq_lens.sum())
    flops, nbytes = PAGED.work(PAGED.variant("gqa_decode"), problem)
    assert flops == 4 * 16 * 32 * tokens
    assert nbytes == 4 * (2 * 4 * 32 * tokens + 2 * 3 * 16 * 32) + problem.page_table.numel() * 4


@pytest.mark.parametrize("case", [c for c in cases.iter_cases("paged", "cpu") if not isinstance(c, tuple)],
                         ids=lambda c: c.name)
def test_every_paged_implementation_matches_the_reference(case):
    _, _, result = cases.prepare_checked(case)
    assert result["ok"], result


def test_a_machine_keeps_its_first_plan_and_later_processes_time_none(tmp_path, monkeypatch):
    """Tuning afresh in every asv process let plans within the timing's noise win by turns (our
    attention kernel's figures moved 6-7% that way): the first choice is filed and reused."""
    from kernels import tuned_choices

    monkeypatch.setattr(tuned_choices, "CHOICES_DIR", tmp_path)
    path = tuned_choices.choice_path(["H200", "b1-kv128k"])
    fake_ms = {plan: 1.0 + abs(i - 4) / 10 for i, plan in enumerate(triton_paged.CANDIDATES)}
    plan, how = triton_paged.remembered_plan(path, apart, time=lambda launcher: fake_ms[launcher.plan])
    assert plan == triton_paged.CANDIDATES[4] and how == f"fastest of {len(fake_ms)} plans"

    def never(launcher):
        raise AssertionError("timed again")

    assert triton_paged.remembered_plan(path, apart, time=never) == (plan, "this machine's choice")
    other = tuned_choices.choice_path(["H200", "b64-kv8k"])
    assert triton_paged.remembered_plan(other, apart, time=lambda launcher: fake_ms[launcher.plan])[1] != \
        "this machine's choice"
