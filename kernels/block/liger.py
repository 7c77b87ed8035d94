"""liger: the fused block with liger-kernel's Triton pieces where it has them (a peer, `liger-kernel`, an
optional extra: pip install '.[peers]'), every other piece (attention, an MoE, the GEMMs, ViT's plain
GELU) exactly as `fused` picks it: kernels/block/fused.py's build with this module's Glue.

Its norms are liger's RMSNorm, Gemma's as offset 1 (x / rms * (1 + w)) all in float32, liger's "gemma"
casting, as its own Gemma patches do, Llama's casting otherwise; and its LayerNorm. The gated MLP's
activation-multiply is its SwiGLU (LigerSiLUMulFunction) or GeGLU (LigerGELUMulFunction, tanh GELU as
Gemma's). RoPE is its liger_rotary_pos_emb: Hugging Face's rotate-half layout, which is the recipe's own
(reference/block.py's rope), so it serves every RoPE'd recipe, DeepSeek-V3's decoupled RoPE keys too.
The call's backend names each role liger serves ("norms liger, activation liger, rope liger").
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernels.block import fused
from variantbench.catalog import lookup


@dataclass(frozen=True)
class Library:
    """liger-kernel's calls the block makes, in liger's signatures: rms_norm(x, w, eps, offset,
    casting_mode, in_place), layer_norm(x, w, bias, eps), swiglu(gate, up), geglu(gate, up), rope(q, k,
    cos, sin) with q (B, H, S, D), k (B, Hkv, S, D), cos and sin (1 or B, S, D), each half the same."""

    rms_norm: Callable
    layer_norm: Callable
    swiglu: Callable
    geglu: Callable
    rope: Callable


def library() -> Library:
    """Imported when a block is prepared, never at import: `list` and the CPU tests run without liger
    (the tests put reference functions in its place)."""
    from liger_kernel.ops.geglu import LigerGELUMulFunction
    from liger_kernel.ops.swiglu import LigerSiLUMulFunction
    from liger_kernel.transformers.functional import liger_layer_norm, liger_rms_norm
    from liger_kernel.transformers.rope import liger_rotary_pos_emb

    return Library(liger_rms_norm, liger_layer_norm, LigerSiLUMulFunction.apply, LigerGELUMulFunction.apply,
                   liger_rotary_pos_emb)


def _liger(function):
    function.backend = "liger"  # fused.build names the piece's role after it
    return function


def glue(variant, liger: Library) -> fused.Glue:
    """fused's Glue with liger's pieces in the roles liger has them."""
    # liger's RMSNorm backward writes dX over dY (in_place). A sandwich's post norm shares dY with the
    # residual (autograd hands both branches of the add one tensor), so there it would corrupt dx: off in
    # a sandwich block, as liger's own Gemma-2 patch sets it; on elsewhere, as its Llama patch leaves it.
    in_place = variant.residual != "sandwich"

    def layer_norm(w, eps):  # liger's LayerNorm always adds a bias; the recipe has none: a zero one, no gradient
        zero = torch.zeros_like(w)
        return lambda x: liger.layer_norm(x, w, zero, eps)

    norms = {
        "rms": lambda w, eps: lambda x: liger.rms_norm(x, w, eps, 0.0, "llama", in_place),
        "gemma_rms": lambda w, eps: lambda x: liger.rms_norm(x, w, eps, 1.0, "gemma", in_place),
        "layer": layer_norm,
    }

    def norm(kind, weight, eps):
        return _liger(lookup(norms, kind, "norm")(weight, eps))

    def activation(mlp, device):
        gated = lookup({"swiglu": liger.swiglu, "geglu": liger.geglu, "gelu": None}, mlp, "MLP")
        if gated is None:  # liger has no plain GELU: fused's own serves ViT's MLP
            return fused.FUSED.activation(mlp, device)
        # h is one GEMM's output, gate then up (w13, as fused computes it): liger's kernels take contiguous
        # halves, so it copies each (its ensure_contiguous), a read and write of h that Hugging Face's
        # separate gate and up GEMMs would not cost. 0.8.5 also has LigerFusedGateUpSiLUMulFunction (its
        # Megatron path), which reads both halves in place, for SwiGLU alone: to time against this on a GPU.
        return _liger(lambda h: gated(*h.chunk(2, dim=-1)))

    def rope(device):
        def rotate(q, k, cos, sin):  # per-sequence tables come (B, 1, S, D) (mixture-of-depths): liger's are 3-D
            return liger.rope(q, k, cos.reshape(-1, *cos.shape[-2:]), sin.reshape(-1, *sin.shape[-2:]))

        return _liger(rotate)

    def tables(positions, head_dim, theta, dtype):
        """liger reads Hugging Face's tables, (S, D): each half the same, cat(freqs, freqs), made once."""
        cos, sin = fused.rope_tables(positions, head_dim, theta, dtype)
        return torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)

    return fused.Glue(norm=norm, activation=activation, rope=rope, tables=tables)


def prepare(variant, problem):
    return fused.build(variant, problem, fused.ALONE, glue(variant, library()))
