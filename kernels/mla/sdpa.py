"""SDPA for MLA, in the form each phase is served in (reference/mla.py):

- prefill, decompressed: the latent expanded to per-head keys (192 wide: 128 from the latent, the
  shared 64-wide RoPE key) and values (128), then causal attention through SDPA's fastest backend
  (kernels/attention/sdpa.py's `fastest`). The expansion is part of every call: it is the layer's.
- decode, absorbed: W_uk folded into the queries, then attention over the cache itself, one 576-wide
  key head with the 512-wide latent as values and the query heads as rows, then W_uv.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from kernels.attention.sdpa import fastest


def decompress(problem):
    """(q, k, v): queries [q_nope ; q_pe], keys [W_uk c ; k_pe] per head, values W_uv c."""
    rank, heads = problem.config.kv_lora_rank, problem.config.n_heads
    latent, k_pe = problem.cache[..., :rank], problem.cache[..., rank:]
    k_nope = torch.einsum("bsr,hdr->bhsd", latent, problem.w_uk)
    k = torch.cat([k_nope, k_pe[:, None].expand(-1, heads, -1, -1)], dim=-1)
    v = torch.einsum("bsr,hdr->bhsd", latent, problem.w_uv)
    return torch.cat([problem.q_nope, problem.q_pe], dim=-1), k, v


def absorb(problem):
    """(q, k, v) of the absorbed form: q (B, H, Sq, rank + rope), k (B, 1, Skv, rank + rope) and
    v (B, 1, Skv, rank), the cache's own storage (views, no copy)."""
    rank = problem.config.kv_lora_rank
    q_latent = torch.einsum("bhqd,hdr->bhqr", problem.q_nope, problem.w_uk)
    keys = problem.cache[:, None]
    return torch.cat([q_latent, problem.q_pe], dim=-1), keys, keys[..., :rank]


def absorb_folded(problem):
    """`absorb` with the query heads folded into query rows, as FlashMLA runs it: q (B, 1, H Sq, rank +
    rope), head-major. One key head and no GQA: SDPA's fused backends refuse a 1-to-128 head group,
    and its math backend would copy the cache for every head (77 + 69 GB at batch 64 x 8k)."""
    q, k, v = absorb(problem)
    return q.reshape(problem.batch, 1, -1, q.shape[-1]), k, v


def decode_mask(problem):
    """The causal mask of Sq > 1 new tokens at the end of the cache (bottom-right aligned, which
    SDPA's is_causal is not); None for one token, which sees every key."""
    if problem.q_len == 1:
        return None
    rows = torch.arange(problem.kv_len - problem.q_len, problem.kv_len, device=problem.device)
    return torch.arange(problem.kv_len, device=problem.device)[None, :] <= rows[:, None]


class _GradientInOutputStrides(torch.autograd.Function):
    """The identity, whose backward hands the gradient on in its input's strides (a copy where they
    differ). Through SDPA's cuDNN backend (torch 2.11, cuDNN 9.19, H200), DeepSeek-V3's block got every
    gradient through attention wrong: dx 4.7 against a tolerance of 0.75, the bfloat16 reference's
    error 0.077 (session 17). There the output is (B, H, S, D) contiguous and its gradient a transposed
    view of the block's (B, S, H, D); in matching strides, or through the other backends, every
    gradient agreed with the reference. The cause, pinned in session 18 (tools/probe_sdpa_backward.py,
    H200, batch 2, 128 heads, 2048 tokens, bfloat16): a transposed gradient alone comes out right (dq
    0.020 against float64, the math backend's 0.012), but after one backward with a contiguous gradient
    at the same shapes it comes out wrong (dq 4.88): a plan cached without the gradient's strides is
    reused for another layout. One layout for every call, the output's, never meets that."""

    @staticmethod
    def forward(ctx, out):
        ctx.strides = out.stride()
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        if grad.stride() == ctx.strides:
            return grad
        return torch.empty_strided(grad.shape, ctx.strides, dtype=grad.dtype, device=grad.device).copy_(grad)


def prepare_function(variant, problem):
    """`prepare`'s call as a function of any queries and cache of the problem's shapes (a block's),
    with the problem's up-projections; the backend is chosen here, on the problem's own tensors."""
    prefill = problem.q_len == problem.kv_len
    heads = problem.config.n_heads
    mask = None if prefill else decode_mask(problem)
    options = (dict(is_causal=True, scale=problem.scale) if prefill
               else dict(attn_mask=None if mask is None else mask.repeat(heads, 1), scale=problem.scale))
    chosen = fastest(*(decompress(problem) if prefill else absorb_folded(problem)), **options)
    backend = getattr(SDPBackend, chosen.backend)

    def attend(q_nope, q_pe, cache):
        p = dataclasses.replace(problem, q_nope=q_nope, q_pe=q_pe, cache=cache)
        if prefill:
            with sdpa_kernel(backend):
                return _GradientInOutputStrides.apply(F.scaled_dot_product_attention(*decompress(p), **options))
        with sdpa_kernel(backend):
            out_latent = F.scaled_dot_product_attention(*absorb_folded(p), **options)
        out_latent = out_latent.view(p.batch, heads, p.q_len, -1)
        return torch.einsum("bhqr,hdr->bhqd", out_latent, p.w_uv)

    attend.backend = chosen.backend
    return attend


def prepare(variant, problem):
    attend = prepare_function(variant, problem)

    def call():
        return attend(problem.q_nope, problem.q_pe, problem.cache)

    call()
    call.backend = attend.backend
    return call
