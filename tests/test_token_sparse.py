"""Token-level top-k attention (DSA): the indexer's selection against a plain formulation, its mask
exactly the selection, the work model, and every implementation (our kernel through the interpreter)
against the float64 reference where the selection is really sparse (16 keys of up to 100), SDPA's
gathered keys in several chunks."""

import pytest
import torch

from kernels.attention import sdpa_gathered
from variantbench import cases
from variantbench.catalog import attention as catalog
from variantbench.catalog import token_selection
from variantbench.catalog.attention import AttentionVariant
from variantbench.shapes import AttentionShape

DSA = AttentionVariant("dsa_topk_16", topk_tokens=16)


def test_the_selection_is_the_indexers_top_k_among_causal_keys():
    q_len, kv_len, topk = 30, 70, 16
    chosen = token_selection.token_selection(2, q_len, kv_len, topk, device="cpu", seed=3)
    gen = torch.Generator().manual_seed(3 + token_selection.INDEXER_SEED_OFFSET)
    heads, dim = token_selection.INDEX_HEADS, token_selection.INDEX_DIM
    index_q = torch.randn(2, q_len, heads, dim, generator=gen)
    index_k = torch.randn(2, kv_len, dim, generator=gen)
    weights = torch.randn(2, q_len, heads, generator=gen) / heads ** 0.5
    for b in range(2):
        for t in range(q_len):
            position = t + kv_len - q_len
            scores = [float((weights[b, t] * (index_q[b, t] @ index_k[b, s]).relu()).sum()) for s in range(position + 1)]
            best = sorted(range(position + 1), key=lambda s: (-scores[s], s))[:topk]
            expected = torch.zeros(kv_len, dtype=torch.bool)
            expected[best] = True
            assert torch.equal(chosen[b, t], expected), (b, t)


def test_the_mask_is_the_selection_and_the_work_model_counts_it():
    shape = AttentionShape("t", "tiny", batch=2, q_len=40, kv_len=100, device="cpu")
    problem = catalog.make_problem(DSA, shape, device="cpu", dtype=torch.float32, seed=1)
    b, h = torch.arange(2).view(2, 1, 1, 1), torch.arange(16).view(1, 16, 1, 1)
    qi, ki = torch.arange(40).view(1, 1, -1, 1), torch.arange(100).view(1, 1, 1, -1)
    mask = DSA.mask_mod(problem)(b, h, qi, ki).expand(2, 16, 40, 100)
    assert torch.equal(mask, problem.selection[:, None].expand_as(mask))
    assert int(problem.selection.sum(-1).max()) == 16
    assert catalog.visible_pairs(DSA, problem) == int(problem.selection.sum()) == 2 * 40 * 16


SHAPES = [AttentionShape("s100", "tiny", 2, 100, 100, device="cpu"),
          AttentionShape("c30", "tiny", 1, 30, 90, device="cpu"),
          AttentionShape("d1", "tiny", 3, 1, 77, device="cpu")]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
@pytest.mark.parametrize("impl", ["reference", "sdpa_gathered", "flex", "triton"])
def test_each_implementation_matches_the_reference_where_the_selection_is_sparse(shape, impl, monkeypatch):
    monkeypatch.setattr(sdpa_gathered, "GATHER_BYTES", 40_000)  # several chunks of queries
    case = cases.Case("attention", DSA, catalog.FAMILY.implementation(impl), shape, "cpu")
    _, call, result = cases.prepare_checked(case)
    assert result["ok"], result
    if impl == "sdpa_gathered" and shape.q_len > 1:
        assert "queries a chunk" in call.backend and int(call.backend.split(", ")[1].split()[0]) < shape.q_len


def test_our_kernel_and_sdpa_over_gathered_keys_say_what_they_do_not_run():
    capped = AttentionVariant("dsa_topk_16_softcap_5", topk_tokens=16, softcap=5.0)
    why = catalog.FAMILY.implementation("triton").unsupported(capped, catalog.FAMILY.shape("tiny-s128"))
    assert "the selection alone" in why
    for variant in (capped, AttentionVariant("dsa_topk_16_alibi", topk_tokens=16, alibi=True)):
        why = catalog.FAMILY.implementation("sdpa_gathered").unsupported(variant, catalog.FAMILY.shape("tiny-s128"))
        assert "no score function" in why


def test_our_kernel_reads_a_selection_over_several_tiles():
    """100 keys of up to 200 a query, in tiles of 64: a whole tile and a partial one."""
    variant = AttentionVariant("dsa_topk_100", topk_tokens=100)
    shape = AttentionShape("s200", "tiny", 1, 200, 200, device="cpu")
    case = cases.Case("attention", variant, catalog.FAMILY.implementation("triton"), shape, "cpu")
    _, _, result = cases.prepare_checked(case)
    assert result["ok"], result


def test_a_query_reads_at_least_one_key():
    with pytest.raises(ValueError, match="at least one key"):
        AttentionVariant("dsa_topk_0", topk_tokens=0)


def test_sdpa_over_gathered_keys_times_no_backward_but_its_forward_and_the_dense_ones_do():
    """Its autograd keeps every query's gathered keys: 137 GB at llama-3-8b-s4k, past an H200 (cad5169)."""
    dsa = cases.resolve("attention", "dsa_topk_2048", "sdpa_gathered", "llama-3-8b-s4k", "cuda")
    assert "gathered keys" in cases.backward_unsupported(dsa)
    assert cases.backward_unsupported(cases.resolve("attention", "gqa_8", "sdpa", "llama-3-8b-s4k", "cuda")) is None


def test_sdpa_gathered_runs_only_token_selections_and_only_nightly():
    """401 ms a call at llama-3-8b-s4k on an H200 (ec6ebbf): out of the default tier's 10 minutes; plain
    SDPA points to it, and it refuses what plain SDPA runs."""
    from variantbench.shapes import in_tier

    with pytest.raises(catalog.Unsupported, match="sdpa_gathered"):
        cases.resolve("attention", "dsa_topk_2048", "sdpa", "llama-3-8b-s4k", "cuda")
    with pytest.raises(catalog.Unsupported, match="token selections"):
        cases.resolve("attention", "gqa_8", "sdpa_gathered", "llama-3-8b-s4k", "cuda")
    gathered = catalog.FAMILY.implementation("sdpa_gathered")
    assert in_tier(gathered, "full") and not in_tier(gathered, "default")


def test_the_packed_selection_and_its_index_lists_hold_every_key_over_several_chunks(monkeypatch):
    """Packing and listing go a chunk of queries at a time (64k keys in memory); here 3 chunks of 4 rows,
    keys not a multiple of 8."""
    monkeypatch.setattr(token_selection, "INDEX_CHUNK", 4)
    selection = token_selection.token_selection(2, 10, 37, 30, device="cpu", seed=3)  # early queries: < 30 keys
    bits = token_selection.packed_bits(selection)
    assert bits.shape == (2, 10, 5) and bits.dtype == torch.uint8
    b, q, kv = torch.arange(2).view(2, 1, 1), torch.arange(10).view(1, 10, 1), torch.arange(37).view(1, 1, 37)
    assert torch.equal(token_selection.token_mask(selection, 27)(b, None, q, kv), selection)
    indices, valid = token_selection.selected_indices(selection, 30)
    listed = torch.zeros(selection.shape, dtype=torch.int64).scatter_add_(-1, indices, valid.long())
    assert torch.equal(listed.bool(), selection) and int(listed.max()) == 1
    assert bool((indices[..., 1:] > indices[..., :-1])[valid[..., 1:]].all())


@pytest.mark.parametrize("topk,q_len,kernel", [(32, 256, "masking causal tiles"), (8, 256, "gather kernel"),
                                                (64, 100, "gather kernel")])
def test_our_kernel_is_the_masked_one_where_the_selection_is_dense_at_prefill_else_the_gather(topk, q_len, kernel):
    """256 queries: 32 keys a query are 0.23 of the causal pairs (the masked kernel, from its dense_from, 0.114),
    8 keys 0.06 (the gather); 100 queries, under one 128-row block, keep the gather at 0.87. Each against the
    float64 reference, the masked one with most of its (row, tile) pairs masked whole."""
    from kernels.attention import triton_token_sparse

    dense_from = triton_token_sparse.TRITON_MASKED.dense_from  # the CPU's (Gluon runs on Hopper alone)
    assert (triton_token_sparse.selected_share(topk, q_len, q_len) >= dense_from) == (topk != 8)
    variant = AttentionVariant(f"dsa_topk_{topk}", topk_tokens=topk)
    shape = AttentionShape(f"s{q_len}", "tiny", 1, q_len, q_len, device="cpu")
    case = cases.Case("attention", variant, catalog.FAMILY.implementation("triton"), shape, "cpu")
    _, call, result = cases.prepare_checked(case)
    assert result["ok"], result
    assert kernel in call.backend


@pytest.mark.parametrize("kernel,seq,masked", [
    ("TRITON_MASKED", 4096, True), ("TRITON_MASKED", 16384, True), ("TRITON_MASKED", 32768, True),
    ("TRITON_MASKED", 65536, False), ("GLUON_MASKED", 32768, True), ("GLUON_MASKED", 65536, True)])
def test_the_catalogs_dsa_takes_the_kernel_measured_faster_at_each_length(kernel, seq, masked):
    """dsa_topk_2048 at llama-3-8b's lengths: shares 0.75, 0.23, 0.121 and 0.0615 of the causal pairs. On an H200
    the Triton masked kernel was the faster down to a share of 0.113-0.115 (session 42, tools/probe_dsa.py), s32k's
    among them (32.34 ms against the gather's 34.25), and the gather at 0.062 (18.16 against 32.29); the Gluon one
    down to 0.047-0.050 (session 43), s64k's among them."""
    from kernels.attention import triton_token_sparse

    share = triton_token_sparse.selected_share(2048, seq, seq)
    assert (share >= getattr(triton_token_sparse, kernel).dense_from) == masked, share


def test_the_masked_kernel_reads_each_rows_own_keys_past_a_whole_masked_tile():
    """A selection by hand: each row of 192 keeps itself, rows before 64 also key 0, rows 130 on also key 70, so
    rows from 64 on walk a first tile of 64 keys masked whole (their running max stays -inf there, not NaN);
    against softmax over the same mask in float64."""
    from kernels.attention import triton_flash, triton_token_sparse

    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 192, 32, generator=gen) for _ in range(3))
    rows = torch.arange(192)
    selection = torch.zeros(1, 192, 192, dtype=torch.bool)
    selection[0, rows, rows] = True
    selection[0, :64, 0] = True
    selection[0, 130:, 70] = True
    chosen = triton_token_sparse.selection_bytes(selection)
    out = triton_flash.forward_launcher(q, k, v, causal=True, selection=chosen)()
    scores = (q.double() @ k.double().transpose(-1, -2)) * 32 ** -0.5
    expected = scores.masked_fill(~selection[:, None], float("-inf")).softmax(-1) @ v.double()
    assert torch.allclose(out.double(), expected, atol=1e-5), (out.double() - expected).abs().max()


def test_a_selection_of_another_shape_or_type_is_refused():
    from kernels.attention import triton_flash, triton_token_sparse

    q = k = v = torch.zeros(1, 1, 16, 32)
    good = triton_token_sparse.selection_bytes(torch.ones(1, 16, 16, dtype=torch.bool))
    assert good.shape == (1, 16, 128) and good.dtype == torch.uint8 and int(good.sum()) == 256
    wide = torch.zeros(1, 16, 256, dtype=torch.uint8)
    for bad in (torch.zeros(1, 16, 16, dtype=torch.uint8), good.bool(), wide[:, :, ::2]):
        with pytest.raises(ValueError, match="selection_bytes"):
            triton_flash.forward_launcher(q, k, v, causal=True, selection=bad)
    triton_flash.forward_launcher(q, k, v, causal=True, selection=good)


def test_the_masked_kernel_never_tunes_a_config_whose_tiles_overflow_shared_memory(monkeypatch, tmp_path):
    """128 x 128 at 3 stages takes 262,168 B with the selection's bytes (sm_90 has 232,448): pruned
    before the autotuner compiles it; every config stays for the other masks."""
    from kernels import tuned_choices
    from kernels.attention import triton_flash

    monkeypatch.setattr(tuned_choices, "CHOICES_DIR", tmp_path)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    named_args = {"Q": torch.empty(1, dtype=torch.bfloat16), "group": 4, "q_len": 4096, "kv_len": 4096}
    flags = dict(CAUSAL=True, WINDOW=False, PREFIX=False, DOCUMENTS=False, SOFTCAP=False, ALIBI=False, HEAD_DIM=128)
    configs = triton_flash.PREFILL_CONFIGS
    kept = triton_flash._remembered(configs, named_args, **flags, SELECTION=True)
    assert [triton_flash._config_name(c) for c in configs if c not in kept] == ["128x128-w8-s3"]
    assert triton_flash._remembered(configs, named_args, **flags, SELECTION=False) == configs
    decode = triton_flash.DECODE_CONFIGS  # 16 rows at 128 keys and 3 stages take 143,392 B: they fit
    assert triton_flash._remembered(decode, {**named_args, "q_len": 1}, **flags, SELECTION=True) == decode


def test_the_masked_kernel_reads_each_sequences_rows_at_cross_lengths():
    """2 sequences, 2 query heads a KV head, 130 queries at the end of 200 keys (rows at positions 70-199): a
    random selection inside causal (each row keeps itself) through the masked kernel against float64; a row's
    selection is its sequence's and its query row's, not its absolute position's."""
    from kernels.attention import triton_flash, triton_token_sparse

    gen = torch.Generator().manual_seed(9)
    q = torch.randn(2, 4, 130, 32, generator=gen)
    k, v = (torch.randn(2, 2, 200, 32, generator=gen) for _ in range(2))
    position = torch.arange(70, 200).view(1, 130, 1)
    selection = (torch.rand(2, 130, 200, generator=gen) < 0.3) & (torch.arange(200) <= position)
    selection |= torch.arange(200) == position
    chosen = triton_token_sparse.selection_bytes(selection)
    out = triton_flash.forward_launcher(q, k, v, causal=True, selection=chosen)()
    keys, values = (t.double().repeat_interleave(2, dim=1) for t in (k, v))
    scores = (q.double() @ keys.transpose(-1, -2)) * 32 ** -0.5
    expected = scores.masked_fill(~selection[:, None], float("-inf")).softmax(-1) @ values
    assert torch.allclose(out.double(), expected, atol=1e-5), (out.double() - expected).abs().max()
