"""Multi-head latent attention (DeepSeek-V2/V3), the layer's attention call: the correctness oracle.

Per token the cache holds one row of kv_lora_rank + qk_rope_dim values: a latent c and a RoPE key
k_pe shared by every head (FlashMLA's layout: 512 + 64 in DeepSeek-V3). Head h's key is
[W_uk[h] c ; k_pe], its value W_uv[h] c, its query [q_nope ; q_pe]. Two forms, equal in exact
arithmetic (tests/test_mla.py checks it in float64):

- decompressed (prefill): every cached token expanded to per-head keys (qk_nope + qk_rope = 192 wide)
  and values (128), then attention;
- absorbed (decode): W_uk folded into the query (q_nope W_uk[h], kv_lora_rank wide) and W_uv applied
  after the output, so attention runs over the cache itself: one 576-wide key shared by all 128
  query heads, the 512-wide latent as its value. A step reads the cache once instead of expanding it.

Queries are the last Sq of the Skv positions (causal). Scores in the inputs' dtype, softmax in
float32 (float64 for float64 inputs), as reference/attention.py. Weights: w_uk (H, qk_nope, rank),
w_uv (H, v_head, rank), the halves of DeepSeek's kv_b_proj (H * (qk_nope + v_head), rank).

Both forms are plain autograd-able torch; the decompressed one's autograd is the family's reference
backward (training runs prefill; decode, the absorbed form, is inference).
"""

import torch


def rope(x, positions, base=10000.0):
    """Rotary position embedding of x (..., S, D) at `positions` (S,), rotate-half convention."""
    half = x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float64) / half)
    angles = positions.to(device=x.device, dtype=torch.float64)[:, None] * inv_freq
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def _probs(scores, q_idx, kv_len, q_len):
    """Causal softmax of (B, H, rows, Skv) scores for query rows `q_idx` of q_len."""
    offset = kv_len - q_len
    rows = (torch.arange(q_len) if q_idx is None else q_idx).to(scores.device)
    visible = torch.arange(kv_len, device=scores.device)[None, :] <= (rows[:, None] + offset)
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)


def decompressed(q_nope, q_pe, cache, w_uk, w_uv, *, scale, q_len=None, q_idx=None):
    """q_nope (B, H, rows, qk_nope), q_pe (B, H, rows, qk_rope), cache (B, Skv, rank + qk_rope) ->
    (B, H, rows, v_head). `q_len`, `q_idx`: the problem's query count and the indices these rows stand
    for (default: all of them), so the check can run sampled rows."""
    rank = w_uk.shape[-1]
    latent, k_pe = cache[..., :rank], cache[..., rank:]
    k_nope = torch.einsum("bsr,hdr->bhsd", latent, w_uk)
    v = torch.einsum("bsr,hdr->bhsd", latent, w_uv)
    # the shared RoPE key through einsum: a matmul against k_pe[:, None] would copy it for every head
    scores = q_nope @ k_nope.transpose(-1, -2) + torch.einsum("bhqd,bsd->bhqs", q_pe, k_pe)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * scale
    probs = _probs(scores, q_idx, cache.shape[1], q_len or q_nope.shape[2])
    return probs.to(v.dtype) @ v


def absorbed(q_nope, q_pe, cache, w_uk, w_uv, *, scale, q_len=None, q_idx=None):
    """As `decompressed`, through the latent: the form decode kernels (FlashMLA, ours) compute."""
    rank = w_uk.shape[-1]
    q_latent = torch.einsum("bhqd,hdr->bhqr", q_nope, w_uk)
    # one key head (the cache row) for every query head: einsum keeps it one batched matmul over the
    # cache as it is (a broadcast matmul against cache[:, None] copied it for all 128 heads: 77 GB at
    # batch 64 x 8k)
    scores = torch.einsum("bhqc,bsc->bhqs", torch.cat([q_latent, q_pe], dim=-1), cache)
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)) * scale
    probs = _probs(scores, q_idx, cache.shape[1], q_len or q_nope.shape[2])
    out_latent = torch.einsum("bhqs,bsr->bhqr", probs.to(cache.dtype), cache[..., :rank])
    return torch.einsum("bhqr,hdr->bhqd", out_latent, w_uv)


def form(problem):
    """The form a problem's phase runs in: decompressed at prefill, absorbed at decode."""
    return decompressed if problem.q_len == problem.kv_len else absorbed


def prepare(variant, problem):
    attend = form(problem)
    return lambda: attend(problem.q_nope, problem.q_pe, problem.cache, problem.w_uk, problem.w_uv, scale=problem.scale)
