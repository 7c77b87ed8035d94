"""The backward of our Triton attention through the interpreter: dq, dk, dv against float64 autograd of
the reference, for every kind of key interval, softcap and ALiBi, grouped heads, lengths no tile
divides, and queries placed at the end of a longer key sequence (chunked prefill)."""

import pytest
import torch

from kernels.attention import triton_attention_backward as backward
from kernels.attention.triton_attention_backward import TritonAttention
from reference.attention import attention
from variantbench.catalog.attention import AttentionVariant, make_problem
from variantbench.shapes import AttentionShape

VARIANTS = [
    AttentionVariant("gqa_8", kv_heads=8),
    AttentionVariant("mqa", kv_heads=1),
    AttentionVariant("sliding_window_7", window=7),
    AttentionVariant("softcap_5", softcap=5.0),
    AttentionVariant("alibi", alibi=True),
    AttentionVariant("full", causal=False),
    AttentionVariant("document", documents=True),
    AttentionVariant("prefix_lm_20", prefix=20),
    AttentionVariant("softcap_5_window_9", softcap=5.0, window=9),
]


def _assert_gradients_match_dense_copies(q, k, v, options, gen, **tolerance):
    """q, k, v's gradients through our kernels equal those of dense copies of the same values (fresh
    storage, standard strides): a layout the backward mishandles shows here."""
    out = TritonAttention.apply(q, k, v, options)
    grad = torch.randn(out.shape, generator=gen)
    got = torch.autograd.grad(out, (q, k, v), grad)
    dense = [t.detach().clone(memory_format=torch.contiguous_format).requires_grad_() for t in (q, k, v)]
    expected = torch.autograd.grad(TritonAttention.apply(*dense, options), dense, grad)
    for name, g, e in zip("qkv", got, expected):
        torch.testing.assert_close(g, e, **tolerance, msg=lambda m, name=name: f"d{name}: {m}")


# chunk-127-of-128: the first 64-row block's last query sits exactly on the second key tile's first key,
# the edge of the dK/dV kernel's skip of row blocks that see none of a tile
@pytest.mark.parametrize("q_len,kv_len", [(70, 70), (33, 101), (127, 128)],
                         ids=["prefill-70", "chunk-33-of-101", "chunk-127-of-128"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_gradients_match_float64_autograd_of_the_reference(variant, q_len, kv_len):
    if variant.prefix and q_len != kv_len:
        pytest.skip("prefix-LM is a prefill mask")
    shape = AttentionShape("t", "tiny", 2, q_len, kv_len, device="cpu")
    p = make_problem(variant, shape, device="cpu", dtype=torch.float32, seed=1, requires_grad=True)
    options = dict(causal=variant.causal, window=variant.window, prefix=variant.prefix, doc_start=p.doc_start,
                   softcap=variant.softcap, alibi=variant.alibi)
    out = TritonAttention.apply(p.q, p.k, p.v, options)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad(out, (p.q, p.k, p.v), grad)
    exact = [t.detach().double().requires_grad_() for t in (p.q, p.k, p.v)]
    reference = attention(*exact, mask_mod=variant.mask_mod(p), score_mod=variant.score_mod(p))
    torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=1e-5)
    for name, g, e in zip("qkv", got, torch.autograd.grad(reference, exact, grad.double())):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=2e-5, msg=lambda m, name=name: f"d{name}: {m}")


# Three tiles of 64 a side: the kernels skip the interval test on tiles every row sees whole, and a
# window of 100 or a document's start leaves tiles that every row reaches but not from their first key
@pytest.mark.parametrize("variant", [AttentionVariant("gqa_8", kv_heads=8),
                                     AttentionVariant("sliding_window_100", window=100),
                                     AttentionVariant("document", documents=True)], ids=lambda v: v.name)
def test_gradients_over_tiles_seen_whole_and_in_part(variant):
    test_gradients_match_float64_autograd_of_the_reference(variant, 192, 192)


def test_gradients_of_transposed_views_match_those_of_contiguous_inputs():
    """A block's q, k, v are (B, S, H, D) projections transposed to (B, H, S, D): not contiguous. The
    kernels read the output gradient with q's strides; a contiguous one against a view's strides was
    read wrong (dq off by 10 in the block check)."""
    gen = torch.Generator().manual_seed(3)

    def view(heads):
        return torch.randn(2, 40, heads, 16, generator=gen).transpose(1, 2).requires_grad_()

    q, k, v = view(4), view(2), view(2)
    options = dict(causal=True, window=None, prefix=None, doc_start=None, softcap=5.0, alibi=False)
    _assert_gradients_match_dense_copies(q, k, v, options, gen, rtol=1e-5, atol=1e-6)


def test_gradients_of_slices_of_one_fused_projection_match_those_of_contiguous_inputs():
    """q, k and v sliced from one (B, H, S, 3D) projection are not dense: the forward's output, allocated
    like q, is contiguous, and the kernels read DO and write DQ with one set of strides."""
    gen = torch.Generator().manual_seed(4)
    qkv = torch.randn(2, 2, 40, 3 * 16, generator=gen).requires_grad_()
    q, k, v = qkv.split(16, dim=-1)
    options = dict(causal=True, window=None, prefix=None, doc_start=None, softcap=None, alibi=False)
    _assert_gradients_match_dense_copies(q, k, v, options, gen)


@pytest.mark.parametrize("loss", ["sum", "transposed"])
def test_gradients_of_an_expanded_or_transposed_output_gradient(loss):
    """out.sum() hands the backward an expanded gradient (every stride 0), a loss through out's
    transpose one whose head dim is strided: both must read as their values, not their strides."""
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, heads, 40, 16, generator=gen).requires_grad_() for heads in (4, 2, 2))
    weight = torch.randn(2, 4, 16, 40, generator=gen)
    options = dict(causal=True, window=None, prefix=None, doc_start=None, softcap=None, alibi=False)

    def objective(out):
        return out.sum() if loss == "sum" else (out.transpose(-1, -2) * weight.to(out.dtype)).sum()

    got = torch.autograd.grad(objective(TritonAttention.apply(q, k, v, options)), (q, k, v))
    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    expected = torch.autograd.grad(objective(attention(*exact, mask_mod=lambda b, h, i, j: j <= i)), exact)
    for name, g, e in zip("qkv", got, expected):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=2e-5, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_gradients_of_a_query_at_an_unaligned_offset(layout):
    """dK/dV's kernel reads q through the copy engine, which needs a 16-byte-aligned base: a dense q four
    bytes into its storage (a slice of a flat buffer) goes through a fresh copy, read as its values. A
    transposed one's output, allocated like it, is not like the copy: dO must still be read as written."""
    gen = torch.Generator().manual_seed(6)
    flat = torch.randn(2 * 4 * 40 * 16 + 1, generator=gen)
    if layout == "contiguous":
        q = flat[1:].view(2, 4, 40, 16).requires_grad_()
    else:
        q = flat[1:].view(2, 40, 4, 16).transpose(1, 2).requires_grad_()
    k, v = (torch.randn(2, 2, 40, 16, generator=gen).requires_grad_() for _ in range(2))
    options = dict(causal=True, window=None, prefix=None, doc_start=None, softcap=None, alibi=False)
    _assert_gradients_match_dense_copies(q, k, v, options, gen)


def test_gradients_of_a_single_batch_query_whose_batch_stride_torch_ignores():
    """A batch of 1 is contiguous to torch whatever its batch stride, and empty_like keeps that stride
    for the output and dO: a stride of 7 elements (28 bytes) is no 16-byte multiple, which the copy
    engine refuses. q's and the output's copies get standard strides."""
    gen = torch.Generator().manual_seed(7)
    q = torch.as_strided(torch.randn(5000, generator=gen), (1, 4, 70, 16), (7, 1120, 16, 1)).requires_grad_()
    k, v = (torch.randn(1, 2, 70, 16, generator=gen).requires_grad_() for _ in range(2))
    options = dict(causal=True, window=None, prefix=None, doc_start=None, softcap=None, alibi=False)
    _assert_gradients_match_dense_copies(q, k, v, options, gen)


def test_gradients_of_no_query_are_zeros_and_no_key_is_refused():
    gen = torch.Generator().manual_seed(8)
    q = torch.randn(2, 4, 0, 16, generator=gen).requires_grad_()
    k, v = (torch.randn(2, 2, 40, 16, generator=gen).requires_grad_() for _ in range(2))
    options = dict(causal=False, window=None, prefix=None, doc_start=None, softcap=None, alibi=False)
    out = TritonAttention.apply(q, k, v, options)
    got = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    for name, g, t in zip("qkv", got, (q, k, v)):
        assert g.shape == t.shape and not g.any(), f"d{name} of no query is not zeros"
    with pytest.raises(ValueError, match="no keys"):
        TritonAttention.apply(torch.randn(2, 4, 40, 16), k[:, :, :0], v[:, :, :0], options)


# Scores rising along the keys: each query's row max grows as it reaches later key tiles, by about 5
# log2 units a 64-key tile ("gentle") or about 92 ("steep"), so the online softmax's running max moves
# with every tile; steep, a kernel that never moved it would overflow float32 within two tiles. Scores reach 12 and 200: float32 rounds a score of 200 by about
# 1e-5, which the outputs and gradients carry, hence the steep case's looser absolute tolerance.
@pytest.mark.parametrize("rise,atol", [(0.024, 2e-5), (0.44, 1e-4)], ids=["gentle", "steep"])
@pytest.mark.parametrize("variant", [AttentionVariant("causal"), AttentionVariant("full", causal=False),
                                     AttentionVariant("softcap_50", softcap=50.0)], ids=lambda v: v.name)
def test_scores_rising_along_the_keys_move_the_running_max(variant, rise, atol):
    gen = torch.Generator().manual_seed(3)
    batch, heads, seq, dim = 1, 2, 200, 16
    direction = torch.randn(dim, generator=gen)
    direction *= 3.0 / direction.norm()
    q = direction + 0.1 * torch.randn(batch, heads, seq, dim, generator=gen)
    ramp = torch.arange(seq, dtype=torch.float32)[:, None] * rise
    k = ramp * direction + 0.1 * torch.randn(batch, heads, seq, dim, generator=gen)
    v = torch.randn(batch, heads, seq, dim, generator=gen)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    options = dict(causal=variant.causal, window=None, prefix=None, doc_start=None, softcap=variant.softcap,
                   alibi=False)
    out = TritonAttention.apply(q, k, v, options)
    grad = torch.randn(out.shape, generator=gen)
    got = torch.autograd.grad(out, (q, k, v), grad)
    exact = [t.detach().double().requires_grad_() for t in (q, k, v)]
    cap = variant.softcap
    score_mod = (lambda s, b, h, qi, ki: cap * torch.tanh(s / cap)) if cap else None
    mask_mod = (lambda b, h, qi, ki: ki <= qi) if variant.causal else None
    reference = attention(*exact, mask_mod=mask_mod, score_mod=score_mod)
    torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=atol)
    for name, g, e in zip("qkv", got, torch.autograd.grad(reference, exact, grad.double())):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=atol, msg=lambda m, name=name: f"d{name}: {m}")


def test_the_side_stream_is_never_the_callers_and_always_the_same_for_it(monkeypatch):
    """dQ's kernel goes to a stream of its own on a GPU; a caller may be running on one of the pooled
    streams cached for that, and then gets the other (the same one every call, so a test can hold it)."""

    class Stream(str):
        device = "cuda:0"

    first, second = Stream("first"), Stream("second")
    monkeypatch.setattr(backward, "_pooled_side_streams", lambda device: (first, second))
    assert backward._side_stream(Stream("caller")) == first
    assert backward._side_stream(first) == second
    assert backward._side_stream(first) == second


# 32 and 128: a shift by other blocks than the preprocess's own 64 rows a program
@pytest.mark.parametrize("rows", [0, 32, 64, 128])
def test_the_preprocess_shifts_alibis_lse_by_each_rows_part_of_the_bias(rows):
    """Hopper's dK/dV adds a score's key part of ALiBi's bias, slope (k - row0) for its row block from row0
    (gluon_backward.alibi_key_part), and reads the row's part, slope (q - row0), from the lse the preprocess
    shifts where ALIBI_ROWS is the kernel's block: lse + slope (q mod 64), each head its slope. Through the
    interpreter, beside delta and dO's copy, which the shift leaves as they are; ALIBI_ROWS 0 writes no shift."""
    batch, heads, seq, dim = 2, 4, 150, 16  # 150: a last program of 22 rows
    gen = torch.Generator().manual_seed(3)
    out, grad = (torch.randn(batch, heads, seq, dim, generator=gen) for _ in range(2))
    lse = torch.randn(batch, heads, seq, generator=gen) * 10
    do, delta = torch.empty_like(out), torch.empty_like(lse)
    shifted = torch.full_like(lse, float("nan"))
    backward._preprocess_kernel[((seq + backward.BLOCK - 1) // backward.BLOCK, batch * heads)](
        out, grad, do, delta, lse, shifted, *out.stride()[:3], *grad.stride()[:3], heads, seq, HEAD_DIM=dim,
        BLOCK=backward.BLOCK, ALIBI_ROWS=rows)
    torch.testing.assert_close(delta, (out * grad).sum(-1))
    assert torch.equal(do, grad)
    if not rows:
        assert shifted.isnan().all()
        return
    slope = 2.0 ** (-8 * (torch.arange(heads, dtype=torch.float64) + 1) / heads) * 1.4426950408889634
    expected = lse.double() + slope[:, None] * (torch.arange(seq) % rows).double()
    torch.testing.assert_close(shifted.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("alibi", [True, False])
def test_only_hoppers_dkdv_reads_the_shifted_lse(alibi, monkeypatch):
    """Where the Hopper kernels run (their refusals answered None here, their launches recorded), dK/dV's
    launch gets the lse shifted by slope (q mod gluon_backward.BLOCK_M) under ALiBi and the forward's lse
    otherwise, and dQ's launch the forward's lse always (gluon_dq adds its own row part a tile)."""
    from kernels.attention import gluon_backward, gluon_dq

    launched = {}
    for module, name in ((gluon_backward, "launch_dkdv"), (gluon_dq, "launch_dq")):
        monkeypatch.setattr(module, "refusal", lambda *tensors: None)
        monkeypatch.setattr(module, name, lambda q, k, v, do, lse, *rest, _name=name, **options:
                            launched.__setitem__(_name, lse.clone()))
    heads, seq = 4, 200
    q, k, v = (torch.randn(1, h, seq, 16, generator=torch.Generator().manual_seed(h)).requires_grad_()
               for h in (heads, 2, 2))
    options = dict(causal=True, window=None, prefix=None, doc_start=None, softcap=None, alibi=alibi)
    TritonAttention.apply(q, k, v, options).sum().backward()
    slope = 2.0 ** (-8 * (torch.arange(heads, dtype=torch.float64) + 1) / heads) * 1.4426950408889634
    shift = slope[:, None] * (torch.arange(seq) % gluon_backward.BLOCK_M).double() if alibi else 0
    torch.testing.assert_close(launched["launch_dkdv"].double(), launched["launch_dq"].double() + shift, rtol=0,
                               atol=1e-5)


def test_hoppers_dkdv_refuses_an_lse_not_said_shifted_under_alibi():
    """gluon_backward.launch_dkdv under ALiBi with the forward's lse as it is (a caller that skipped the
    preprocess's shift): one ValueError line before anything is built or launched, not wrong gradients."""
    from kernels.attention import gluon_backward

    q, k, v = (torch.randn(1, h, 128, 128) for h in (2, 1, 1))
    lse = delta = torch.zeros(1, 2, 128)
    with pytest.raises(ValueError, match="lse_shifted=True"):
        gluon_backward.launch_dkdv(q, k, v, q, lse, delta, k, v, causal=True, alibi=True)
