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

from kernels.attention.sdpa import attend_through, fastest


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
            return attend_through(backend, *decompress(p), **options)
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
