"""DSA's selection in our Gluon kernels (kernels/attention/gluon_selection.py): the packings (a row's words, a key's)
and the layouts they rest on, on the CPU; the forward against float64 on a Hopper GPU (skipped elsewhere; the
backward's is tests/test_gpu_numerics.py's)."""

import os

import pytest
import torch

from kernels.attention import gluon_selection

# Triton 3.6.0's linear layout of the forward's accumulator, NVMMADistributedLayout([3, 0], [4, 1], [16, 128, 16]) at
# (64, 128), as gl.to_linear_layout printed it (offline, sm_90): (row, column) of each register, lane and warp bit;
# dK/dV's S^T, [16, 64, 16] at (64, 64), drops the last register bit (tools/compile_gluon_sm90.py asserts both)
ACCUMULATOR = dict(reg=[[0, 1], [8, 0], [0, 8], [0, 16], [0, 32], [0, 64]],
                   lane=[[0, 2], [0, 4], [1, 0], [2, 0], [4, 0]], warp=[[16, 0], [32, 0]])
KEY_ACCUMULATOR = ACCUMULATOR | dict(reg=ACCUMULATOR["reg"][:-1])


def _column(i, q, b):
    return 8 * i + 2 * q + b


@pytest.mark.parametrize("quads,accumulator", [(gluon_selection.QUADS, ACCUMULATOR),
                                               (gluon_selection.KEY_QUADS, KEY_ACCUMULATOR)], ids=["rows", "keys"])
def test_the_quads_view_is_the_accumulators_layout_with_its_columns_split(quads, accumulator):
    """Each basis of QUADS (KEY_QUADS), its column 8 i + 2 q + b joined back, is the accumulator's, in the same order:
    so the reshape the kernel takes back to the accumulator's layout moves no data."""
    quads = quads.value
    for name, bases in (("reg", quads.reg_bases), ("lane", quads.lane_bases), ("warp", quads.warp_bases)):
        joined = [[row, _column(i, q, b)] for row, i, q, b in bases]
        assert joined == accumulator[name], name


def _thread_sees(words, tile, warp, lane):
    """{(row, key): bit} that thread (warp, lane) tests for key tile `tile`, as the kernel does: its two rows' word
    lane % 4, bit 2 i + b for its columns 8 i + 2 (lane % 4) + b."""
    q = lane % 4
    seen = {}
    for row in (16 * warp + lane // 4, 16 * warp + lane // 4 + 8):
        word = int(words[row, tile * 4 + q])
        for i in range(16):
            for b in range(2):
                seen[row, tile * 128 + _column(i, q, b)] = (word >> (2 * i + b)) & 1
    return seen


@pytest.mark.parametrize("block_rows", [64, 3], ids=["one-block", "blocks-of-3-rows"])
def test_every_thread_reads_its_own_scores_bits_and_none_past_a_rows_position(monkeypatch, block_rows):
    """A random selection over 200 keys for 64 queries at the end of them: every (row, key) the accumulator gives a
    thread is tested against that row's selection of that key, keys past the row's position cleared (the kernel
    reads no interval), the padding's keys 0; packed whole, and in blocks of 3 rows (the last of 1), each block's
    causal diagonal at its own rows."""
    monkeypatch.setattr(gluon_selection, "_BLOCK_BYTES", block_rows * 256)
    gen = torch.Generator().manual_seed(3)
    q_len, kv_len = 64, 200
    selection = torch.rand(2, q_len, kv_len, generator=gen) < 0.5
    words = gluon_selection.selection_words(selection)
    assert words.shape == (2, q_len, 8) and words.dtype == torch.int32
    position = torch.arange(kv_len - q_len, kv_len).view(q_len, 1)
    for batch in range(2):
        expected = torch.nn.functional.pad(selection[batch] & (torch.arange(kv_len) <= position), (0, 56))
        seen = {}
        for tile in range(2):
            for warp in range(4):
                for lane in range(32):
                    seen.update(_thread_sees(words[batch], tile, warp, lane))
        assert len(seen) == q_len * 256  # every score of both tiles, once
        assert all(bit == int(expected[row, key]) for (row, key), bit in seen.items())


@pytest.mark.parametrize("block_keys", [200, 7], ids=["one-block", "blocks-of-7-keys"])
def test_every_key_word_holds_its_queries_selection_of_the_key(monkeypatch, block_keys):
    """key_words of a random selection of 200 keys by 150 queries at the end of them: in dK/dV's S^T (keys x 64
    queries a block) lane l of a warp reads, for each of its keys, word l % 4 of each query block, bit 2 i + b for
    its queries 8 i + 2 (l % 4) + b (the accumulator's columns, as the forward's). Every key's every such bit is
    that query's selection of that key, queries before the key's position cleared, the padding's queries 0; packed
    whole and in blocks of 7 keys (the last of 4), each block's causal diagonal at its own keys."""
    monkeypatch.setattr(gluon_selection, "_BLOCK_BYTES", block_keys * 192 + 1)
    gen = torch.Generator().manual_seed(4)
    q_len, kv_len = 150, 200
    selection = torch.rand(2, q_len, kv_len, generator=gen) < 0.5
    words = gluon_selection.key_words(selection)
    assert words.shape == (2, kv_len, 12) and words.dtype == torch.int16
    position = torch.arange(kv_len - q_len, kv_len).view(q_len, 1)
    for batch in range(2):
        expected = torch.nn.functional.pad((selection[batch] & (torch.arange(kv_len) <= position)).T, (0, 42))
        read = torch.zeros(kv_len, 192, dtype=torch.bool)
        for block in range(3):
            for q in range(4):
                word = words[batch, :, block * 4 + q].to(torch.int32) & 0xFFFF
                for i in range(8):
                    for b in range(2):
                        read[:, block * 64 + _column(i, q, b)] = ((word >> (2 * i + b)) & 1).bool()
        assert torch.equal(read, expected)


@pytest.mark.parametrize("selection", [torch.ones(2, 128, 128), torch.ones(128, 128, dtype=torch.bool)],
                         ids=["float", "2-D"])
def test_a_selection_not_of_3_d_bools_is_refused(selection):
    with pytest.raises(ValueError, match="bool"):
        gluon_selection.selection_words(selection)


@pytest.mark.parametrize("options,why", [
    (dict(causal=False), "without the causal mask"), (dict(window=64), "beside window"),
    (dict(doc_start=torch.zeros(1, 128, dtype=torch.int32)), "beside document"), (dict(alibi=True), "beside alibi"),
    (dict(softcap=30.0, prefix=16), "beside prefix, softcap")])
def test_a_selection_beside_another_mask_or_score_is_refused(options, why):
    q = torch.zeros(1, 2, 128, 128)
    words = gluon_selection.selection_words(torch.ones(1, 128, 128, dtype=torch.bool))
    given = dict(causal=True, doc_start=None, window=None, prefix=None, softcap=None, alibi=False) | options
    with pytest.raises(ValueError, match=why):
        gluon_selection.checked_words(words, q, **given)


def test_a_selection_of_another_shape_or_type_is_refused():
    q = torch.zeros(1, 2, 256, 128)
    plain = dict(causal=True, doc_start=None, window=None, prefix=None, softcap=None, alibi=False)
    good = gluon_selection.selection_words(torch.ones(1, 256, 256, dtype=torch.bool))
    assert gluon_selection.checked_words(good, q, **plain) is good
    assert gluon_selection.checked_words(None, q, **plain) is None
    strided = torch.zeros(1, 256, 16, dtype=torch.int32)[:, :, ::2]  # the right shape, not contiguous
    for bad in (good[:, :128], good.to(torch.int64), good.view(torch.uint8), strided):
        with pytest.raises(ValueError, match="selection_words"):
            gluon_selection.checked_words(bad, q, **plain)


def test_key_words_of_another_shape_or_type_are_refused():
    """dK/dV's words: (B, Skv, Sq / 64 x 4) int16; the rows' words of the same selection are refused."""
    q = torch.zeros(1, 2, 256, 128)
    plain = dict(causal=True, doc_start=None, window=None, prefix=None, softcap=None, alibi=False, keys=True)
    selection = torch.ones(1, 256, 256, dtype=torch.bool)
    good = gluon_selection.key_words(selection)
    assert gluon_selection.checked_words(good, q, **plain) is good
    strided = torch.zeros(1, 256, 32, dtype=torch.int16)[:, :, ::2]  # the right shape, not contiguous
    for bad in (good[:, :128], good.to(torch.int32), strided, gluon_selection.selection_words(selection)):
        with pytest.raises(ValueError, match="key_words"):
            gluon_selection.checked_words(bad, q, **plain)


@pytest.mark.skipif(not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
                    or torch.cuda.get_device_capability() != (9, 0), reason="needs a Hopper GPU (the Gluon forward)")
@pytest.mark.parametrize("selection_kind", ["indexer", "whole-tiles-masked"])
def test_dsa_through_the_gluon_forward_matches_float64(selection_kind):
    """DSA through the Gluon forward at a shape it takes (bfloat16, head dim 128, 2 sequences of 512, 4 query heads a
    KV head): the catalog's indexer top 96; and by hand each row itself, rows before 64 also key 0 and rows from 300
    also key 140, so rows from 128 on walk whole tiles that hide every key (their running max stays -inf there).
    Within twice the error of the reference computed in bfloat16, against float64."""
    from kernels.attention import triton_token_sparse
    from reference.attention import attention
    from variantbench.catalog.attention import AttentionVariant, make_problem
    from variantbench.shapes import AttentionShape

    variant = AttentionVariant("dsa_topk_96", topk_tokens=96)
    shape = AttentionShape("s512", "llama-3-8b", 2, 512, 512, device="cuda")
    p = make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=5)
    selection = p.selection
    if selection_kind == "whole-tiles-masked":
        rows = torch.arange(512, device="cuda")
        selection = torch.zeros_like(selection)
        selection[:, rows, rows] = True
        selection[:, :64, 0] = True
        selection[:, 300:, 140] = True
    assert triton_token_sparse.masked_kernel(p.q, p.k, p.v) is triton_token_sparse.GLUON_MASKED
    out = triton_token_sparse.gluon_masked_launch(p.q, p.k, p.v, selection)()

    def mask(b, h, q_idx, kv_idx):
        return selection[b, q_idx, kv_idx]

    low = attention(p.q, p.k, p.v, mask_mod=mask)
    exact = attention(p.q.double(), p.k.double(), p.v.double(), mask_mod=mask)
    error, low_error = ((t.double() - exact).abs().max().item() for t in (out, low))
    assert error <= 2 * low_error, f"{error:.3g} against the bfloat16 reference's {low_error:.3g}"
