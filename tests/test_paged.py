"""Paged-KV decode: the seeded fragmented layout, the reference against attention over the same keys
laid out contiguously, our kernel equal to itself on a shuffled page table (exactly) and to the float64
reference at lengths of 1 and of exactly a page, Flex's BlockMask made from the page table, the work
model, and every implementation against the reference."""

import pytest
import torch

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
