"""Which of our attention forwards runs a case (kernels/attention/triton_attention.py): the Gluon kernel
where it runs the tensors, the Triton kernel everywhere else, and a prepared call names the one it
runs. The Gluon kernel itself runs on Hopper alone (tests/test_gpu_numerics.py); here its launcher is a
stand-in and its refusal is forced."""

import torch
import triton

from kernels.attention import gluon_backward, gluon_dq, gluon_flash, gluon_walk, triton_attention, triton_flash
from variantbench import cases
from variantbench.catalog import attention as catalog
from variantbench.catalog import family
from variantbench.shapes import AttentionShape

SHAPE = AttentionShape("s128", "tiny", 2, 128, 128, device="cpu")


def _problem(name):
    variant = family("attention").variant(name)
    return variant, catalog.make_problem(variant, SHAPE, device="cpu", dtype=torch.float32, seed=3)


def test_the_cpu_runs_the_triton_forward_and_names_it():
    variant, problem = _problem("gqa_8")
    assert "Hopper" in triton_attention.gluon_refusal(problem.q, problem.k, problem.v)
    ours = family("attention").implementation("triton")
    _, call, result = cases.prepare_checked(cases.Case("attention", variant, ours, SHAPE, "cpu"))
    assert result["ok"] and call.backend == "triton"


class _OnHopper:
    """A CPU tensor that says it lives on a GPU, for the refusal's checks of shapes and strides."""

    is_cuda = True

    def __init__(self, tensor):
        self.tensor = tensor

    def __getattr__(self, name):
        return getattr(self.tensor, name)


def test_the_gluon_refusal_takes_a_blocks_views_and_refuses_what_its_descriptors_cannot_read(monkeypatch):
    monkeypatch.setattr(gluon_flash, "_capability", lambda device: (9, 0))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)

    def refusal(q_heads=8, kv_heads=2, batch=2, length=256, view=lambda t: t, dtype=torch.bfloat16):
        tensors = (torch.empty(batch, length, h, 128, dtype=dtype).transpose(1, 2) for h in (q_heads, kv_heads, kv_heads))
        return gluon_flash.refusal(*(_OnHopper(view(t)) for t in tensors))

    assert refusal() is None  # a block's projections: (B, S, H, D) seen as (B, H, S, D)
    assert refusal(view=lambda t: t.contiguous()) is None
    assert "positive strides" in refusal(view=lambda t: t[:1].expand(2, -1, -1, -1))
    assert "16-byte" in refusal(view=lambda t: torch.empty(t.numel() + 1, dtype=t.dtype)[1:].view(t.shape))
    assert "16-byte" in refusal(view=lambda t: torch.empty(*t.shape[:3], 132, dtype=t.dtype)[..., :128])
    assert "multiple of 128" in refusal(length=200)
    assert "key heads" in refusal(q_heads=6, kv_heads=4) and "key heads" in refusal(kv_heads=0)
    wide = [_OnHopper(torch.empty(1, 1, 128, 128, dtype=torch.bfloat16).expand(2 ** 20, h, -1, -1)) for h in (32, 8, 8)]
    assert "int32" in gluon_flash.refusal(*wide) and "int32" in refusal(batch=0)
    # the backward kernels' grids keep batch x heads on their second axis (at most 65,535)
    many = [_OnHopper(torch.empty(1, 1, 128, 128, dtype=torch.bfloat16).expand(8192, h, -1, -1)) for h in (32, 8, 8)]
    assert "65,535" in gluon_dq.refusal(*many, many[0], many[0])
    assert "65,535" in gluon_backward.refusal(*many, many[0], many[1], many[2])
    assert "16-bit" in refusal(dtype=torch.float32)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "interpreter" in refusal()


def test_the_gluon_forward_runs_what_it_accepts_and_a_forced_tile_keeps_triton(monkeypatch):
    """With the refusal forced away, the forward, prepare and prepare_function go through the Gluon
    launcher (a stand-in: the Triton one, tagged), a sliding window's too; a forced Triton config or a
    refusal goes to the Triton kernel."""
    launched = []

    def stand_in(q, k, v, items=None, **options):  # the Triton forward walks documents without items
        launched.append("gluon")
        return triton_flash.forward_launcher(q, k, v, **options)

    monkeypatch.setattr(gluon_flash, "forward_launcher", stand_in)
    monkeypatch.setattr(gluon_flash, "refusal", lambda q, k, v: None)
    variant, problem = _problem("gqa_8")
    assert triton_attention.prepare(variant, problem).backend == "gluon forward" and launched == ["gluon"]
    assert triton_attention.prepare_function(variant, problem).backend == "gluon forward"
    assert launched == ["gluon"] * 2
    tile = triton.Config({"BLOCK_M": 32, "BLOCK_N": 16}, num_warps=4, num_stages=2)
    assert triton_attention.prepare(variant, problem, config=tile).backend == "triton" and len(launched) == 2
    window, windowed = _problem("sliding_window_1024")
    assert triton_attention.prepare(window, windowed).backend == "gluon forward" and len(launched) == 3
    monkeypatch.setattr(gluon_flash, "refusal", lambda q, k, v: "not Hopper")
    assert triton_attention.prepare(variant, problem).backend == "triton" and len(launched) == 3


def test_a_functions_label_names_what_its_last_call_ran(monkeypatch):
    """prepare_function's call serves blocks, which hand it their own views: its label follows each
    call's tensors, not the problem's it was prepared on."""
    launched = []

    def stand_in(q, k, v, items=None, **options):  # the Triton forward walks documents without items
        launched.append("gluon")
        return triton_flash.forward_launcher(q, k, v, **options)

    monkeypatch.setattr(gluon_flash, "forward_launcher", stand_in)
    monkeypatch.setattr(gluon_flash, "refusal", lambda q, k, v: None if q.is_contiguous() else "a view")
    variant, problem = _problem("gqa_8")
    attend = triton_attention.prepare_function(variant, problem)
    assert attend.backend == "gluon forward" and launched == ["gluon"]
    views = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (problem.q, problem.k, problem.v)]
    out = attend(*views)
    assert attend.backend == "triton" and launched == ["gluon"]
    assert torch.allclose(out, attend(problem.q, problem.k, problem.v))
    assert attend.backend == "gluon forward" and launched == ["gluon"] * 2


def test_a_training_call_hands_the_gluon_forward_its_document_items_listed_once(monkeypatch):
    """prepare's forward+backward call and prepare_function's (with and without a gradient) list the
    document walk's items once (triton_attention.document_work) and hand the same list to every forward
    they launch: a training step builds a launcher every call, and listing there cost 321 us of the host's
    time a call (session 30)."""
    handed = []

    def stand_in(q, k, v, items=None, **options):
        handed.append(items)
        return triton_flash.forward_launcher(q, k, v, **options)

    monkeypatch.setattr(gluon_flash, "forward_launcher", stand_in)
    monkeypatch.setattr(gluon_flash, "refusal", lambda q, k, v: None)
    variant = family("attention").variant("document")
    problem = catalog.make_problem(variant, SHAPE, device="cpu", dtype=torch.float32, seed=3, requires_grad=True)
    # the positions the Gluon forward walks the documents' items at
    rows = gluon_flash.item_positions(problem.q, problem.k, problem.doc_start, None, None, False)
    listed = gluon_walk.document_items(problem.doc_start, rows)
    call = triton_attention.prepare(variant, problem)
    call()
    attend = triton_attention.prepare_function(variant, problem)
    attend(problem.q, problem.k, problem.v)
    with torch.no_grad():  # a block's evaluation: the forward alone
        attend(problem.q, problem.k, problem.v)
    assert len(handed) == 5 and handed[0] is handed[1] and handed[2] is handed[3] is handed[4]
    assert all(items.rows == rows and torch.equal(items.listed, listed) for items in handed)
