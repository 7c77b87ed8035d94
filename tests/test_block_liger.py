"""The block's `liger` peer on the CPU: skipped with its reason where liger-kernel is missing and on any
CPU (its kernels run on the GPU only), and its wiring (which piece goes where, Gemma's offset, the
residual order, RoPE's tables) checked against the reference block with liger's calls replaced by
reference functions written here to liger's signatures. liger's own kernels are checked on a GPU."""

import importlib.machinery
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from reference import block as reference_block
from variantbench import cases, check_workers
from variantbench.catalog import Unsupported, family
from variantbench.cli import main

BLOCK = family("block")
LIGER = BLOCK.implementation("liger")


def test_liger_is_listed_and_says_how_to_install_it_where_it_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "liger_kernel", None)  # `import liger_kernel` fails, installed or not
    why = LIGER.unsupported(BLOCK.variant("llama-3-8b"), BLOCK.shape("prefill-b4-s4k"))
    assert why == "liger-kernel is not installed (an optional extra: pip install '.[peers]')"
    with pytest.raises(Unsupported, match="liger-kernel is not installed"):
        cases.resolve("block", "llama-3-8b", "liger", "tiny-prefill-b2-s48", "cpu")
    listed = CliRunner().invoke(main, ["list", "--family", "block"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert " liger " in next(line for line in lines if "variant baseline" in line)  # a column of the table
    assert f"  liger: {why}" in lines


def test_liger_is_skipped_on_the_cpu_even_where_installed(monkeypatch):
    """Its RMSNorm, SwiGLU and GeGLU fail under the Triton interpreter (liger 0.8.5), so TRITON_INTERPRET=1
    (which the tests set) does not bring it to the CPU, as it does our kernels."""
    installed = types.ModuleType("liger_kernel")
    installed.__spec__ = importlib.machinery.ModuleSpec("liger_kernel", None)
    monkeypatch.setitem(sys.modules, "liger_kernel", installed)
    assert LIGER.unsupported(BLOCK.variant("llama-3-8b"), BLOCK.shape("prefill-b4-s4k")) is None
    with pytest.raises(Unsupported, match="liger-kernel runs on the GPU only, not in the Triton interpreter"):
        cases.resolve("block", "gemma-2-9b-local", "liger", "tiny-prefill-b2-s48", "cpu")


def hf_rope(q, k, cos, sin):
    """Hugging Face's apply_rotary_pos_emb, which liger_rotary_pos_emb computes: x cos + rotate_half(x) sin,
    cos and sin (1 or B, S, D) with both halves the same."""
    assert cos.dim() == 3 and torch.equal(*cos.chunk(2, -1)) and torch.equal(*sin.chunk(2, -1))
    cos, sin = cos[:, None], sin[:, None]  # over the heads

    def rotate_half(x):
        x1, x2 = x.chunk(2, -1)
        return torch.cat([-x2, x1], -1)

    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


@pytest.fixture
def liger_calls(monkeypatch):
    """kernels.block.liger with reference functions in liger's place; the list of what was called, how."""
    from kernels.block import liger

    calls = []

    def rms_norm(x, w, eps, offset, casting_mode, in_place):
        calls.append(("rms_norm", offset, casting_mode, in_place))
        return reference_block.rms_norm(x, offset + w, eps)

    def layer_norm(x, w, bias, eps):
        calls.append(("layer_norm",))
        assert not bias.any() and not bias.requires_grad
        return F.layer_norm(x, x.shape[-1:], w, bias, eps)

    def swiglu(gate, up):
        calls.append(("swiglu",))
        return F.silu(gate) * up

    def geglu(gate, up):
        calls.append(("geglu",))
        return F.gelu(gate, approximate="tanh") * up

    def rope(q, k, cos, sin):
        calls.append(("rope",))
        return hf_rope(q, k, cos, sin)

    monkeypatch.setattr(liger, "library", lambda: liger.Library(rms_norm, layer_norm, swiglu, geglu, rope))
    return calls


def checked(name, shape):
    """`check` of the liger block, past resolve (which skips it on a CPU): forward, and gradients where
    the fused block has them, against the reference block. Its backend's choices, as a set."""
    case = cases.Case("block", BLOCK.variant(name), LIGER, BLOCK.shape(shape), "cpu")
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line
    return set(result.line.split("  via ")[1].rsplit("  (", 1)[0].split(", "))


@pytest.mark.parametrize("name,shape,roles,used", [
    ("llama-3-8b", "tiny-prefill-b2-s48", {"norms liger", "activation liger", "rope liger"},
     {("rms_norm", 0.0, "llama", True), ("swiglu",), ("rope",)}),
    # Gemma's 1 + w as liger's offset, in float32 (its "gemma" casting); the sandwich's norms write no
    # gradient over their input's (in_place off)
    ("gemma-2-9b-global", "tiny-prefill-b2-s48", {"norms liger", "activation liger", "rope liger"},
     {("rms_norm", 1.0, "gemma", False), ("geglu",), ("rope",)}),
    ("gemma-2-9b-local", "tiny-decode-b2-kv40", {"norms liger", "activation liger", "rope liger"},
     {("rms_norm", 1.0, "gemma", False), ("geglu",), ("rope",)}),
    ("qwen3-30b-a3b", "tiny-prefill-b2-s48", {"norms liger", "rope liger"},
     {("rms_norm", 0.0, "llama", True), ("rope",)}),
    ("llama-3-8b-depth", "tiny-prefill-b2-s48", {"norms liger", "activation liger", "rope liger"},
     {("rms_norm", 0.0, "llama", True), ("swiglu",), ("rope",)}),
    ("deepseek-v3", "tiny-decode-b2-kv40", {"norms liger", "rope liger"},
     {("rms_norm", 0.0, "llama", True), ("rope",)}),
    ("vit-l16", "tiny-prefill-b2-s48", {"norms liger"}, {("layer_norm",)}),  # liger has no plain GELU
    pytest.param("qwen3-next", "tiny-prefill-b2-s48", {"norms liger"}, {("rms_norm", 0.0, "llama", True)},
                 marks=pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                          reason="its gated DeltaNet runs our Triton kernel on the CPU, interpreted")),
])
def test_the_liger_block_with_reference_pieces_in_liger_s_place_is_the_reference_block(liger_calls, name, shape,
                                                                                       roles, used):
    choices = checked(name, shape)
    assert {c for c in choices if c.endswith(" liger")} == roles, choices
    assert set(liger_calls) == used


def test_a_liger_piece_wired_wrongly_fails_the_check(liger_calls, monkeypatch):
    """The gate and up halves handed to liger's SwiGLU the other way round: silu(up) * gate."""
    from kernels.block import liger

    right = liger.library()
    swapped = liger.Library(right.rms_norm, right.layer_norm, lambda gate, up: right.swiglu(up, gate), right.geglu,
                            right.rope)
    monkeypatch.setattr(liger, "library", lambda: swapped)
    case = cases.Case("block", BLOCK.variant("llama-3-8b"), LIGER, BLOCK.shape("tiny-prefill-b2-s48"), "cpu")
    assert check_workers.check_one(case).status == "mismatch"


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="liger's RoPE runs on the CPU interpreted")
@pytest.mark.parametrize("name,shape", [("llama-3-8b-depth", "tiny-prefill-b2-s48"),
                                        ("deepseek-v3", "tiny-decode-b2-kv40")])
def test_liger_s_own_rope_in_the_block_where_liger_is_installed(liger_calls, monkeypatch, name, shape):
    """Of liger 0.8.5's kernels its RoPE alone runs under the interpreter: the real one (forward, backward,
    its in-place writes) with per-sequence positions and with DeepSeek-V3's RoPE keys."""
    pytest.importorskip("liger_kernel")
    from liger_kernel.transformers.rope import liger_rotary_pos_emb

    from kernels.block import liger

    s = liger.library()  # the stand-ins
    monkeypatch.setattr(liger, "library", lambda: liger.Library(s.rms_norm, s.layer_norm, s.swiglu, s.geglu,
                                                                liger_rotary_pos_emb))
    assert "rope liger" in checked(name, shape)
