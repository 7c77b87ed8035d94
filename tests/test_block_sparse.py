"""Block-sparse top-k attention: the selection against an independent formulation, its mask against
the selection exactly, the work model against the mask, and every implementation (our Triton kernel
through the interpreter) against the float64 reference where the selection is really sparse."""

import pytest
import torch

from variantbench import cases
from variantbench.catalog import attention as catalog
from variantbench.catalog.attention import AttentionVariant
from variantbench.catalog.block_selection import SELECTION_BLOCK, block_selection, selected_pairs
from variantbench.shapes import AttentionShape

B = SELECTION_BLOCK


def problem(q_len, kv_len, variant, seed=1, dtype=torch.float64):
    shape = AttentionShape("t", "tiny", batch=2, q_len=q_len, kv_len=kv_len, device="cpu")
    return catalog.make_problem(variant, shape, device="cpu", dtype=dtype, seed=seed)


def selection_by_loops(q, k, topk):
    """The selection written out per (batch, KV head, query block), plain Python over block indices."""
    batch, n_q_heads, q_len, _ = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    group, n = n_q_heads // n_kv_heads, -(-kv_len // B)
    offset = kv_len - q_len
    chosen = torch.zeros(batch, n_kv_heads, n, n, dtype=torch.bool)
    for b in range(batch):
        for h in range(n_kv_heads):
            for j in range(offset // B, n):
                rows = [i for i in range(q_len) if (i + offset) // B == j]
                pooled_q = sum(q[b, h * group + g, rows].double().mean(0) for g in range(group))
                scores = [float(pooled_q @ k[b, h, i * B:(i + 1) * B].double().mean(0)) for i in range(j)]
                ranked = sorted(range(j), key=lambda i: (-scores[i], i))  # ties to the earlier block
                for i in ranked[:topk]:
                    chosen[b, h, j, i] = True
    return chosen


@pytest.mark.parametrize("q_len,kv_len,topk", [(400, 400, 2), (100, 400, 3), (1, 333, 1), (300, 300, 0)])
def test_the_selection_matches_a_plain_formulation_and_its_mask_is_exactly_it(q_len, kv_len, topk):
    variant = AttentionVariant(f"block_topk_{topk}", topk_blocks=topk)
    p = problem(q_len, kv_len, variant)
    selection = block_selection(p.q, p.k, topk)
    assert torch.equal(selection, selection_by_loops(p.q, p.k, topk))
    # the mask, evaluated as the reference evaluates it, is the selection's blocks plus the own block
    b, h = torch.arange(2).view(2, 1, 1, 1), torch.arange(16).view(1, 16, 1, 1)
    qi, ki = torch.arange(q_len).view(1, 1, -1, 1), torch.arange(kv_len).view(1, 1, 1, -1)
    mask = variant.mask_mod(p)(b, h, qi, ki)
    positions = torch.arange(kv_len - q_len, kv_len)
    expected = torch.zeros(2, 16, q_len, kv_len, dtype=torch.bool)
    for head in range(16):
        for row, pos in enumerate(positions.tolist()):
            for key in range(pos + 1):
                expected[:, head, row, key] = (key // B == pos // B) | selection[:, head // 4, pos // B, key // B]
    assert torch.equal(mask.expand_as(expected), expected)
    # the work model counts exactly the pairs the mask lets through (per head, both sequences)
    assert catalog.visible_pairs(variant, p) == int(expected.sum()) // 16 == 2 * selected_pairs(topk, q_len, kv_len)


def test_ties_go_to_the_earlier_block():
    variant = AttentionVariant("block_topk_2", topk_blocks=2)
    p = problem(320, 320, variant)
    p.k[:] = 1.0  # every block pools to the same key: all scores tie
    selection = block_selection(p.q, p.k, 2)
    assert selection[0, 0, 4].tolist() == [True, True, False, False, False]


def test_the_selection_is_per_kv_head_and_sparse_at_these_shapes():
    p = problem(448, 448, AttentionVariant("block_topk_2", topk_blocks=2), seed=4)
    selection = block_selection(p.q, p.k, 2)
    assert not torch.equal(selection[:, 0], selection[:, 1])  # heads choose differently
    assert int(selection[0, 0, 6].sum()) == 2 and not bool(selection[0, 0, 6, 6])


SPARSE = [
    (AttentionVariant("block_topk_2", topk_blocks=2), AttentionShape("s448", "tiny", 2, 448, 448, device="cpu")),
    (AttentionVariant("block_topk_2", topk_blocks=2), AttentionShape("c100", "tiny", 2, 100, 400, device="cpu")),
    (AttentionVariant("block_topk_1", topk_blocks=1), AttentionShape("d1", "tiny", 3, 1, 333, device="cpu")),
    (AttentionVariant("block_topk_0", topk_blocks=0), AttentionShape("s200", "tiny", 1, 200, 200, device="cpu")),
    (AttentionVariant("block_topk_3_softcap_5", topk_blocks=3, softcap=5.0),
     AttentionShape("s330", "tiny", 1, 330, 330, device="cpu")),
]


@pytest.mark.parametrize("variant,shape", SPARSE, ids=lambda x: x.name)
@pytest.mark.parametrize("impl", ["triton", "flex", "reference"])
def test_each_implementation_matches_the_reference_where_the_selection_is_sparse(variant, shape, impl):
    case = cases.Case("attention", variant, catalog.FAMILY.implementation(impl), shape, "cpu")
    offset = shape.kv_len - shape.q_len
    if impl == "flex" and offset % SELECTION_BLOCK:
        with pytest.raises(cases.UnsupportedWhenPrepared, match="query blocks start at query 0"):
            cases.prepare_checked(case)
        return
    _, _, result = cases.prepare_checked(case)
    assert result["ok"], result


def test_our_kernel_and_flex_say_what_they_do_not_run():
    windowed = AttentionVariant("block_topk_2_window_64", topk_blocks=2, window=64)
    why = catalog.FAMILY.implementation("triton").unsupported(windowed, catalog.FAMILY.shape("tiny-s128"))
    assert "causal selection" in why
    sdpa = catalog.FAMILY.implementation("sdpa").unsupported(catalog.FAMILY.variant("block_topk_16"),
                                                               catalog.FAMILY.shape("tiny-s128"))
    assert "block-sparse" in sdpa


def test_flex_block_mask_is_the_selection_full_and_the_own_block_partial():
    """The CPU's unfused Flex ignores the blocks (it applies the mask to every score), so their
    structure, which the GPU's fused kernel reads, is checked here on its own."""
    from kernels.attention.flex import selection_block_mask

    variant = AttentionVariant("block_topk_2", topk_blocks=2)
    p = problem(448, 448, variant, seed=4, dtype=torch.float32)
    mask = selection_block_mask(variant, p)
    selection = block_selection(p.q, p.k, 2).repeat_interleave(4, 1)
    own = torch.eye(7, dtype=torch.bool).expand_as(selection)
    assert torch.equal(mask.to_dense().bool(), selection | own)
    full = torch.zeros_like(selection)
    counts, indices = mask.full_kv_num_blocks, mask.full_kv_indices
    for b, h, j in torch.cartesian_prod(torch.arange(2), torch.arange(16), torch.arange(7)).tolist():
        full[b, h, j, indices[b, h, j, :counts[b, h, j]].long()] = True
    assert torch.equal(full, selection)
    # the fused kernels read the full list with the partial list's strides and length
    assert mask.kv_indices.shape == mask.full_kv_indices.shape
    assert mask.kv_indices.stride() == mask.full_kv_indices.stride()
