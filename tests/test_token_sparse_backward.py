"""DSA's backward through our kernels (the interpreter): the masked forward's autograd function, whose Triton dK/dV
and dQ kernels mask every tile by the selection's bytes, against float64 autograd of the reference over its selection
as the mask; the catalog's call takes it for a gradient at any share, a forward alone gathering where it is sparse;
which kernels (Triton or Gluon, stubbed) each selection's bytes and words reach."""

import pytest
import torch

from kernels.attention import triton_token_sparse
from kernels.attention.triton_attention_backward import TritonAttention
from reference.attention import attention
from variantbench.catalog.attention import AttentionVariant, make_problem
from variantbench.shapes import AttentionShape


# 192 x 192: three 64-key tiles a side, so the dK/dV kernel's row blocks see a tile whole by the interval and in
# part by the selection; 160 queries at the end of 200 keys: cross lengths, the last key tile part padding
@pytest.mark.parametrize("q_len,kv_len,topk", [(192, 192, 24), (160, 200, 40)], ids=["prefill-192", "chunk-160-of-200"])
def test_gradients_match_float64_autograd_of_the_reference_over_the_selection(q_len, kv_len, topk):
    variant = AttentionVariant(f"dsa_topk_{topk}", topk_tokens=topk)
    shape = AttentionShape("t", "tiny", 2, q_len, kv_len, device="cpu")
    p = make_problem(variant, shape, device="cpu", dtype=torch.float32, seed=1, requires_grad=True)
    options = dict(causal=True, selection=triton_token_sparse.selection_bytes(p.selection))
    out = TritonAttention.apply(p.q, p.k, p.v, options)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad(out, (p.q, p.k, p.v), grad)
    exact = [t.detach().double().requires_grad_() for t in (p.q, p.k, p.v)]
    reference = attention(*exact, mask_mod=variant.mask_mod(p))
    torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=1e-5)
    for name, g, e in zip("qkv", got, torch.autograd.grad(reference, exact, grad.double())):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=2e-5, msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("topk,q_len", [(32, 256), (8, 256), (16, 100)], ids=["share-0.23", "share-0.06", "rows-100"])
def test_the_catalogs_call_takes_a_gradient_through_the_masked_kernels_at_any_share(topk, q_len):
    """8 keys of 256 (0.06 of the causal pairs) and 100 queries (under one 128-row block) gather in a forward
    alone; with a gradient they run the masked kernels too (the gather has no backward), right against float64."""
    variant = AttentionVariant(f"dsa_topk_{topk}", topk_tokens=topk)
    shape = AttentionShape(f"s{q_len}", "tiny", 1, q_len, q_len, device="cpu")
    problem = make_problem(variant, shape, device="cpu", dtype=torch.float32, seed=1, requires_grad=True)
    call = triton_token_sparse.prepare(variant, problem)
    assert "forward and our Triton backward" in call.backend  # (the CPU: no Gluon kernel)
    grad = torch.randn(problem.q.shape, generator=torch.Generator().manual_seed(3))
    got = torch.autograd.grad(call(), problem.q, grad)[0]
    exact = problem.q.detach().double().requires_grad_()
    reference = attention(exact, problem.k.detach().double(), problem.v.detach().double(),
                          mask_mod=variant.mask_mod(problem))
    torch.testing.assert_close(got.double(), torch.autograd.grad(reference, exact, grad.double())[0], rtol=1e-4,
                               atol=2e-5)


def test_a_key_tile_that_does_not_divide_a_selection_rows_padding_is_refused(monkeypatch):
    """The kernels read a tile's selection bytes unmasked: a key tile of 256 would read past a row padded to 128."""
    from kernels.attention import triton_attention_backward

    monkeypatch.setattr(triton_attention_backward, "BLOCK", 256)
    variant = AttentionVariant("dsa_topk_16", topk_tokens=16)
    shape = AttentionShape("s128", "tiny", 1, 128, 128, device="cpu")
    p = make_problem(variant, shape, device="cpu", dtype=torch.float32, seed=1, requires_grad=True)
    out = triton_token_sparse.trainable(p.q, p.k, p.v, p.selection)()
    with pytest.raises(ValueError, match="does not divide a selection row's padding of 128 keys"):
        out.sum().backward()


@pytest.mark.parametrize("words,runs", [(False, "gluon"), (True, "gluon"), (True, "triton")],
                         ids=["bytes-alone", "words-beside", "words-beside-off-hopper"])
def test_a_selection_reaches_the_gluon_forward_only_with_its_words(monkeypatch, words, runs):
    """Where the Gluon forward runs the tensors (stubbed here: the CPU has none), a selection's bytes alone go to the
    Triton forward, which reads them; with its words beside them the Gluon forward takes the words as its selection.
    Where it does not run them, the bytes go to the Triton forward with the words left behind (it would refuse an
    unknown option)."""
    from kernels.attention import gluon_flash, triton_attention, triton_flash

    taken = {}
    monkeypatch.setattr(triton_attention, "_kernel", lambda *args: {"gluon": gluon_flash, "triton": triton_flash}[runs])
    monkeypatch.setattr(gluon_flash, "forward_launcher", lambda *a, **kw: taken.setdefault("gluon", kw))
    monkeypatch.setattr(triton_flash, "forward_launcher", lambda *a, **kw: taken.setdefault("triton", kw))
    q = torch.zeros(1, 2, 128, 128)
    chosen = dict(selection=torch.ones(1), selection_words=torch.zeros(1)) if words else dict(selection=torch.ones(1))
    triton_attention.forward_launcher(q, q, q, causal=True, **chosen)
    if words and runs == "gluon":
        assert list(taken) == ["gluon"] and taken["gluon"]["selection"] is chosen["selection_words"]
    else:
        assert list(taken) == ["triton"] and taken["triton"]["selection"] is chosen["selection"]
        assert "selection_words" not in taken["triton"]


def test_words_without_a_selections_bytes_are_refused():
    from kernels.attention import triton_attention

    q = torch.zeros(1, 2, 128, 128)
    with pytest.raises(ValueError, match="beside a selection's bytes"):
        triton_attention.forward_launcher(q, q, q, causal=True,
                                          selection_words=torch.zeros(1, 128, 4, dtype=torch.int32))


@pytest.mark.parametrize("masked", ["gluon", "triton"])
def test_trainable_packs_the_words_only_for_the_gluon_kernels(monkeypatch, masked):
    """The training step hands its autograd function the selection's bytes (the Triton kernels read them) and, where
    the masked kernel is the Gluon forward (stubbed: the CPU has none), the words the Gluon kernels read beside
    them: a row's (the forward's and dQ's) and a key's (dK/dV's)."""
    from kernels.attention import gluon_selection

    kernel = {"gluon": triton_token_sparse.GLUON_MASKED, "triton": triton_token_sparse.TRITON_MASKED}[masked]
    monkeypatch.setattr(triton_token_sparse, "masked_kernel", lambda *args: kernel)
    taken = {}
    monkeypatch.setattr(TritonAttention, "apply", lambda q, k, v, options: taken.update(options))
    selection = torch.rand(1, 128, 128, generator=torch.Generator().manual_seed(4)) < 0.5
    q = torch.zeros(1, 2, 128, 64)
    triton_token_sparse.trainable(q, q, q, selection)
    assert torch.equal(taken["selection"], triton_token_sparse.selection_bytes(selection))
    if masked == "gluon":
        assert torch.equal(taken["selection_words"], gluon_selection.selection_words(selection))
        assert torch.equal(taken["selection_key_words"], gluon_selection.key_words(selection))
    else:
        assert "selection_words" not in taken and "selection_key_words" not in taken


@pytest.mark.parametrize("words,refused,kernels", [
    ((), False, ("triton dq", "triton dkdv")), (("rows", "keys"), False, ("gluon dq", "gluon dkdv")),
    (("rows",), False, ("gluon dq", "triton dkdv")), (("keys",), False, ("triton dq", "gluon dkdv")),
    (("rows", "keys"), True, ("triton dq", "triton dkdv"))],
    ids=["bytes-alone", "words-beside", "rows-words-alone", "keys-words-alone", "gluon-refuses"])
def test_dsa_backward_runs_a_gluon_kernel_only_with_its_words(monkeypatch, words, refused, kernels):
    """Where the Gluon kernels take the tensors (stubbed: the CPU has none), DSA's backward hands dQ the rows' words
    and dK/dV the keys' words as their selections, the bytes left behind, and the forward no key words; a kernel
    without its words, or one the Gluon kernels refuse, is the Triton one, reading the bytes."""
    from kernels.attention import gluon_backward, gluon_dq, gluon_selection, triton_attention_backward, triton_flash

    launched = {}

    def stub(name):
        return lambda *args, **options: launched.setdefault(name, options)

    class TritonKernel:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return stub(self.name)

    for module, name in ((gluon_dq, "dq"), (gluon_backward, "dkdv")):
        monkeypatch.setattr(module, "refusal", lambda *args: "stubbed: refused" if refused else None)
        monkeypatch.setattr(module, f"launch_{name}", stub(f"gluon {name}"))
    for name in ("dq", "dkdv"):
        monkeypatch.setattr(triton_attention_backward, f"_{name}_kernel", TritonKernel(f"triton {name}"))
    forward_launcher = triton_flash.forward_launcher
    monkeypatch.setattr(triton_flash, "forward_launcher",
                        lambda *args, **options: launched.setdefault("forward", options) and forward_launcher(
                            *args, **options))
    selection = torch.rand(1, 128, 128, generator=torch.Generator().manual_seed(5)) < 0.3
    selection |= torch.eye(128, dtype=torch.bool)
    q, k, v = (torch.randn(1, 2, 128, 32, generator=torch.Generator().manual_seed(seed)).requires_grad_()
               for seed in (1, 2, 3))
    packed = {"rows": ("selection_words", gluon_selection.selection_words(selection)),
              "keys": ("selection_key_words", gluon_selection.key_words(selection))}
    options = dict(causal=True, selection=triton_token_sparse.selection_bytes(selection)) | dict(
        packed[kind] for kind in words)
    TritonAttention.apply(q, k, v, options).sum().backward()
    assert launched["forward"]["selection"] is options["selection"] and "selection_key_words" not in launched["forward"]
    assert sorted(launched) == sorted(("forward", *kernels))
    handed = {"gluon dq": "selection_words", "gluon dkdv": "selection_key_words"}
    for kernel in kernels:
        if kernel in handed:
            assert launched[kernel]["selection"] is options[handed[kernel]]
            assert not {"selection_words", "selection_key_words"} & set(launched[kernel])
        else:
            assert launched[kernel]["SELECTION"]


@pytest.mark.parametrize("option", ["selection_words", "selection_key_words"])
def test_words_without_bytes_are_refused_by_the_autograd_function(option):
    q = torch.zeros(1, 2, 128, 32, requires_grad=True)
    with pytest.raises(ValueError, match="beside its bytes"):
        TritonAttention.apply(q, q, q, {"causal": True, option: torch.zeros(1)})
