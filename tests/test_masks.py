"""Each variant's mask, evaluated on index grids, equals an independently written dense mask."""

import pytest
import torch

from variantbench.catalog.attention import (
    VARIANTS,
    AttentionProblem,
    AttentionVariant,
    document_starts,
    visible_pairs,
)
from variantbench.shapes import AttentionShape


def problem(batch, q_len, kv_len, *, documents=False, seed=0):
    q = torch.randn(batch, 4, q_len, 8)
    k = torch.randn(batch, 2, kv_len, 8)
    doc_start = document_starts(batch, kv_len, seed) if documents else None
    return AttentionProblem(q, k, k, doc_start, seed)


def evaluate(variant, prob):
    mask_mod = variant.mask_mod(prob)
    b = torch.arange(prob.batch).view(-1, 1, 1, 1)
    h = torch.zeros(1, 1, 1, 1, dtype=torch.long)
    qi = torch.arange(prob.q_len).view(1, 1, -1, 1)
    ki = torch.arange(prob.kv_len).view(1, 1, 1, -1)
    if mask_mod is None:
        return torch.ones(prob.batch, prob.q_len, prob.kv_len, dtype=torch.bool)
    return mask_mod(b, h, qi, ki).expand(prob.batch, 1, prob.q_len, prob.kv_len)[:, 0]


def dense_by_loops(variant, prob):
    """Written pair by pair from the variants' prose definitions, sharing no code with the catalog."""
    out = torch.zeros(prob.batch, prob.q_len, prob.kv_len, dtype=torch.bool)
    offset = prob.kv_len - prob.q_len
    for b in range(prob.batch):
        docs = []
        if prob.doc_start is not None:
            doc = -1
            for pos in range(prob.kv_len):
                if pos == 0 or prob.doc_start[b, pos] != prob.doc_start[b, pos - 1]:
                    doc += 1
                docs.append(doc)
        for i in range(prob.q_len):
            qpos = i + offset
            for k in range(prob.kv_len):
                ok = True
                if variant.causal:
                    ok = k <= qpos or (variant.prefix is not None and k < variant.prefix)
                if variant.window is not None:
                    ok = ok and qpos - k <= variant.window - 1  # the query itself plus window-1 before
                if variant.documents:
                    ok = ok and docs[k] == docs[qpos]
                out[b, i, k] = ok
    return out


# Selections are tested apart (tests/test_block_sparse.py, test_token_sparse.py): several key intervals a query.
SMALL_VARIANTS = tuple(v for v in VARIANTS if v.topk_blocks is None and v.topk_tokens is None) + (
    AttentionVariant("sliding_window_5", window=5),
    AttentionVariant("prefix_lm_9", prefix=9),
    AttentionVariant("document_window_6", documents=True, window=6),
)


@pytest.mark.parametrize("variant", SMALL_VARIANTS, ids=lambda v: v.name)
@pytest.mark.parametrize("q_len,kv_len", [(37, 37), (1, 29), (5, 29)])
def test_mask_matches_independent_dense_mask(variant, q_len, kv_len):
    prob = problem(2, q_len, kv_len, documents=variant.documents, seed=3)
    assert torch.equal(evaluate(variant, prob), dense_by_loops(variant, prob))


@pytest.mark.parametrize("variant", SMALL_VARIANTS, ids=lambda v: v.name)
def test_key_bounds_and_work_model_match_the_mask(variant):
    prob = problem(3, 41, 41, documents=variant.documents, seed=5)
    dense = evaluate(variant, prob)
    lo, hi = variant.key_bounds(prob)
    k = torch.arange(prob.kv_len)
    from_bounds = (k >= lo[..., None]) & (k <= hi[..., None])
    assert torch.equal(from_bounds, dense)
    assert visible_pairs(variant, prob) == int(dense.sum())


def test_window_counts_the_query_itself():
    prob = problem(1, 50, 50)
    dense = evaluate(AttentionVariant("sliding_window_8", window=8), prob)
    assert dense.sum(-1)[0, 30].item() == 8
    assert dense[0, 30, 30] and dense[0, 30, 23] and not dense[0, 30, 22]


def test_document_lengths_are_seeded_and_cover_the_sequence():
    a, b = document_starts(2, 1000, seed=11), document_starts(2, 1000, seed=11)
    assert torch.equal(a, b)
    assert not torch.equal(a, document_starts(2, 1000, seed=12))
    lengths = torch.unique(a[0], return_counts=True)[1]
    assert lengths.sum() == 1000 and len(lengths) >= 2
    assert (lengths[:-1] >= 1000 // 16).all() and (lengths <= 1000 // 2).all()


def test_shapes_reject_heads_that_do_not_group():
    from variantbench.catalog import Unsupported

    shape = AttentionShape("odd", "tiny", batch=1, q_len=8, kv_len=8, device="cpu")
    with pytest.raises(Unsupported, match="do not split"):
        AttentionVariant("gqa_3", kv_heads=3).n_kv_heads(shape)
