"""Reference attention: the correctness oracle and the unfused speed floor.

Dense eager PyTorch for any mask and score function in attention-gym's form. Runs on CPU and GPU,
needs nothing beyond torch, and is imported by no kernel.
"""

import torch


def attention(q, k, v, *, mask_mod=None, score_mod=None, scale=None, q_idx=None):
    """softmax(score_mod(q k^T * scale) masked by mask_mod) v, with grouped KV heads.

    q: (B, Hq, Sq, D); k, v: (B, Hkv, Skv, D), Hq a multiple of Hkv (MHA, GQA, MQA): query head h
    reads KV head h // (Hq / Hkv).
    q_idx: (Sq,) the query indices the rows of q stand for (default 0..Sq-1); the check passes a
    sample of rows to run this at shapes whose full score matrix would not fit.
    Scores are computed in q's dtype (as an eager model would) and the softmax in float32, or float64
    for float64 inputs.
    A row with no visible key returns zeros.
    """
    batch, n_heads, q_len, head_dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    group = n_heads // n_kv_heads
    k = k.repeat_interleave(group, dim=1)  # (B, Hq, Skv, D)
    v = v.repeat_interleave(group, dim=1)
    scale = head_dim**-0.5 if scale is None else scale

    # float32 at least: a float64 check keeps float64 (float() here once made the oracle's softmax float32)
    scores = (q @ k.transpose(-1, -2)).to(torch.promote_types(q.dtype, torch.float32)) * scale  # (B, Hq, Sq, Skv)
    b = torch.arange(batch, device=q.device).view(batch, 1, 1, 1)
    h = torch.arange(n_heads, device=q.device).view(1, n_heads, 1, 1)
    qi = (torch.arange(q_len) if q_idx is None else q_idx).to(q.device).view(1, 1, q_len, 1)
    ki = torch.arange(kv_len, device=q.device).view(1, 1, 1, kv_len)
    if score_mod is not None:
        scores = score_mod(scores, b, h, qi, ki)
    if mask_mod is not None:
        visible = mask_mod(b, h, qi, ki).expand_as(scores)
        scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all-masked rows: softmax gives NaN
    return probs.to(v.dtype) @ v


def prepare(variant, problem):
    mask_mod, score_mod = variant.mask_mod(problem), variant.score_mod(problem)
    return lambda: attention(problem.q, problem.k, problem.v, mask_mod=mask_mod, score_mod=score_mod)
