"""The paged family: decode attention over a paged KV cache, as serving engines store it.

Each sequence's keys live in pages of 16 or 64 tokens scattered over a shared pool (a seeded,
fragmented allocation: pages of different sequences interleave, 1 in 9 stays free), found through a
page table; sequences in one batch may differ in length. The math is GQA decode (reference/paged.py);
what is measured is reading K/V through the table. SDPA over a contiguous copy (made once, untimed)
is the unpaged reference point and the baseline; Flex reads the pool through a BlockMask made from
the page table; ours gathers pages inside its split decode kernel.
"""

import math
from dataclasses import dataclass

import torch

from reference import paged as reference_paged
from variantbench.catalog import Family, Implementation, NamedVariant, sample_rows
from variantbench.shapes import PAGED_SHAPES, PagedShape

# The layout (lengths, page placement) belongs to the shape, not to the input values: the check's and
# the timing's problems must hold the same number of pages, since the timed inputs are copied into
# the checked problem's tensors.
LAYOUT_SEED = 2026
FREE_PAGES = 1 / 8  # pool pages left free, between the used ones


@dataclass(frozen=True)
class PagedVariant(NamedVariant):
    """Decode over a paged cache; its dims come from the shape's model."""


VARIANTS = (PagedVariant("gqa_decode", baseline=True, note="one new token per sequence, the model's KV heads"),)

IMPLEMENTATIONS = (
    Implementation("reference", "reference.paged", fused=False, backward=False),
    Implementation("sdpa", "kernels.paged.sdpa", fused=True, backward=False),
    # A peer, so nightly, as attention's Flex: its compile made it ~16 s of 75ceccd's 643 s default tier
    # (H200, session 15), over the 10 minutes.
    Implementation("flex", "kernels.paged.flex", fused=True, backward=False, tier="full"),
    Implementation("triton", "kernels.paged.triton_paged", fused=True, backward=False, needs_triton=True, ours=True),
)


@dataclass
class PagedProblem:
    """q (B, Hq, 1, D); k_pool, v_pool (1, Hkv, pages x page_size, D); page_table (B, max pages) int32;
    seq_lens (B,) int32."""

    config: object
    q: torch.Tensor
    k_pool: torch.Tensor
    v_pool: torch.Tensor
    page_table: torch.Tensor
    seq_lens: torch.Tensor
    page_size: int
    seed: int

    @property
    def batch(self):
        return self.q.shape[0]

    @property
    def device(self):
        return self.q.device

    def inputs(self):
        return {"q": self.q, "k_pool": self.k_pool, "v_pool": self.v_pool}

    def grad_inputs(self):
        raise NotImplementedError("the paged implementations here are forward-only")


def layout(shape: PagedShape):
    """(sequence lengths, page table (B, max pages) int32, pool pages): seeded from the shape alone."""
    gen = torch.Generator().manual_seed(LAYOUT_SEED)
    if shape.lengths == "equal":
        lengths = torch.full((shape.batch,), shape.kv_len, dtype=torch.int32)
    else:
        lengths = torch.randint(max(1, shape.kv_len // 8), shape.kv_len + 1, (shape.batch,), generator=gen,
                                dtype=torch.int32)
    pages = [math.ceil(int(n) / shape.page_size) for n in lengths]
    pool_pages = sum(pages) + math.ceil(FREE_PAGES * sum(pages))
    placement = torch.randperm(pool_pages, generator=gen)[:sum(pages)].to(torch.int32)
    table = torch.zeros(shape.batch, max(pages), dtype=torch.int32)
    start = 0
    for b, count in enumerate(pages):
        table[b, :count] = placement[start:start + count]
        start += count
    return lengths, table, pool_pages


def make_problem(variant, shape: PagedShape, *, device, dtype, seed, requires_grad=False):
    config = shape.config
    gen = torch.Generator(device).manual_seed(seed)
    lengths, table, pool_pages = layout(shape)

    def randn(*size):
        return torch.randn(*size, generator=gen, device=device, dtype=torch.float32).to(dtype)

    pool = (1, config.n_kv_heads, pool_pages * shape.page_size, config.head_dim)
    return PagedProblem(config=config, q=randn(shape.batch, config.n_heads, 1, config.head_dim), k_pool=randn(*pool),
                        v_pool=randn(*pool), page_table=table.to(device), seq_lens=lengths.to(device),
                        page_size=shape.page_size, seed=seed)


def check_views(variant, problem, out, rows):
    """Up to `rows` sampled sequences, each against its keys gathered and attended in the reference."""
    picked = sample_rows(problem.batch, rows, problem.seed).to(problem.device)
    p = problem

    def reference(dtype):
        return reference_paged.paged_decode(p.q[picked].to(dtype), p.k_pool.to(dtype), p.v_pool.to(dtype),
                                            p.page_table[picked], p.seq_lens[picked], p.page_size)

    return reference, out[picked], int(picked.numel())


def work(variant, problem, backward=False):
    """(FLOPs, bytes): 4 Hq D per key of every sequence (q.k and p.v); each key and value read once,
    the page table, q in and the output out."""
    config, tokens = problem.config, int(problem.seq_lens.sum())
    elem = problem.q.element_size()
    flops = 4 * config.n_heads * config.head_dim * tokens
    nbytes = (elem * (2 * config.n_kv_heads * config.head_dim * tokens + 2 * problem.q.numel())
              + problem.page_table.numel() * problem.page_table.element_size())
    return flops, nbytes


FAMILY = Family(
    name="paged",
    variants=VARIANTS,
    implementations=IMPLEMENTATIONS,
    shapes=PAGED_SHAPES,
    baseline_implementation="sdpa",
    make_problem=make_problem,
    check_views=check_views,
    work=work,
)
