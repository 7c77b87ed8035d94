"""The overlapped sequence-parallel products (kernels/block/parallel.py) against the collectives they
replace, on two gloo processes: broadcasts then products equal an all-gather then the products, and
slab-by-slab products reduced onto each rank equal a product then a reduce-scatter."""

import multiprocessing
import socket

import pytest
import torch
import torch.distributed as dist

RANKS = 2


def _compare(rank, port, results):
    from torch.distributed._symmetric_memory import (_fused_all_gather_matmul_fallback,
                                                     _fused_matmul_reduce_scatter_fallback)

    from kernels.block.parallel import (_gather_products, _gather_tokens, _product_reduce, _scatter_tokens,
                                        _symm_mem_products, _symm_mem_reduce)

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=RANKS)
    try:
        gen = torch.Generator().manual_seed(5 + rank)  # each rank its own tokens and partial sums
        h = torch.randn(3, 4, 8, generator=gen, dtype=torch.float64)  # (B, s, dim): this rank's tokens
        weights = [torch.randn(6, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64),
                   torch.randn(5, 8, generator=torch.Generator().manual_seed(10), dtype=torch.float64)]
        gathered = _gather_tokens(RANKS)(h)
        overlapped = _gather_products(RANKS)(h, weights)
        a = torch.randn(3, 4 * RANKS, 7, generator=gen, dtype=torch.float64)  # (B, S, k) partial inputs
        w = torch.randn(8, 7, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
        reduced = _scatter_tokens(RANKS)(a @ w.t())
        overlapped_reduced = _product_reduce(RANKS)(a, w)
        # torch's symmetric-memory operators have CUDA kernels only; their gloo-capable fallbacks (the
        # same operator contract, through functional collectives) check how our split calls them
        symm = _symm_mem_products(_fused_all_gather_matmul_fallback)(h, weights)
        symm_reduced = _symm_mem_reduce(_fused_matmul_reduce_scatter_fallback)(a, w)
        results.put((rank, [(o - gathered @ wt.t()).abs().max().item() for o, wt in zip(overlapped + symm,
                                                                                         weights + weights)],
                     [tuple(o.shape) for o in overlapped + symm],
                     max((r - reduced).abs().max().item() for r in (overlapped_reduced, symm_reduced)),
                     tuple(overlapped_reduced.shape) + tuple(symm_reduced.shape)))
    finally:
        dist.destroy_process_group()


def test_overlapped_products_are_the_gather_and_the_reduce_scatter_they_replace():
    """Ours (per-rank broadcasts and reduces) and torch's symmetric-memory operators' contract."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_compare, args=(rank, port, results)) for rank in range(RANKS)]
    for process in processes:
        process.start()
    got = sorted(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for rank, errors, shapes, reduce_error, reduced_shape in got:
        assert shapes == [(3, 4 * RANKS, 6), (3, 4 * RANKS, 5)] * 2, rank
        assert max(errors) < 1e-12 and reduce_error < 1e-12, (rank, errors, reduce_error)
        assert reduced_shape == (3, 4, 8) * 2


def test_an_overlapped_split_splits_the_tokens_as_sequence_parallel_does():
    from kernels.block.parallel import SPLITS

    assert SPLITS["sequence_overlapped"].splits_tokens and SPLITS["sequence"].splits_tokens
    assert not SPLITS["tensor"].splits_tokens
    split = SPLITS["sequence_overlapped"].make(RANKS)
    assert split.gather_products is not None and split.product_reduce is not None


@pytest.mark.parametrize("mode", ["tensor", "sequence"])
def test_the_plain_splits_keep_their_collectives_whole(mode):
    from kernels.block.parallel import SPLITS

    split = SPLITS[mode].make(RANKS)
    assert split.gather_products is None and split.product_reduce is None


def test_the_symmetric_memory_split_runs_on_cuda_only_and_says_so():
    from variantbench import cases
    from variantbench.catalog import Unsupported

    with pytest.raises(Unsupported, match="CUDA kernels only"):
        cases.resolve("block", "llama-3-8b", "sequence_parallel_symm_mem", "tiny-prefill-b2-s48", "cpu")
