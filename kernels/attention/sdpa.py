"""SDPA: torch's scaled_dot_product_attention through the fastest backend that runs the call.

The variant's mask function is evaluated once into a dense boolean mask (B or 1, 1, Sq, Skv); plain
causal prefill uses `is_causal` instead, and a mask that hides nothing is dropped, because both let
SDPA pick its fused causal or unmasked kernels (cuDNN, flash) rather than the masked ones.
"""

import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from variantbench.timing import per_call_ms

# Tried in this order; `prepare` keeps the fastest that accepts the call and records its name.
FUSED_BACKENDS = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)
# Tried only when no fused backend accepts the call: it materialises B x H x Sq x Skv scores (32 GiB
# in float32 for one llama-3-8b 16k sequence) and never beats a fused kernel that runs.
FALLBACK_BACKEND = SDPBackend.MATH
TRIAL_CALLS = 5  # per backend; enough to rank backends that differ by 1.5x or more (cuDNN vs flash)


def dense_mask(mask_mod, problem):
    batch, q_len, kv_len = problem.batch, problem.q_len, problem.kv_len
    device = problem.q.device
    b = torch.arange(batch, device=device).view(batch, 1, 1, 1)
    h = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
    qi = torch.arange(q_len, device=device).view(1, 1, q_len, 1)
    ki = torch.arange(kv_len, device=device).view(1, 1, 1, kv_len)
    return mask_mod(b, h, qi, ki).expand(batch, 1, q_len, kv_len)


def mask_arguments(variant, problem):
    """(attn_mask, is_causal) for SDPA."""
    mask_mod = variant.mask_mod(problem)
    if mask_mod is None:
        return None, False
    mask = dense_mask(mask_mod, problem)
    if bool(mask.all()):
        return None, False
    if problem.q_len == problem.kv_len and torch.equal(mask, torch.ones_like(mask).tril()):
        return None, True  # SDPA's is_causal is top-left aligned: only valid when Sq == Skv
    return mask, False


class _GradientInOutputStrides(torch.autograd.Function):
    """The identity, whose backward hands the gradient on in its input's strides (a copy where they
    differ). Through SDPA's cuDNN backend (torch 2.11, cuDNN 9.19, H200), DeepSeek-V3's MLA block got every
    gradient through attention wrong: dx 4.7 against a tolerance of 0.75, the bfloat16 reference's
    error 0.077 (session 17). There the output is (B, H, S, D) contiguous and its gradient a transposed
    view of the block's (B, S, H, D); in matching strides, or through the other backends, every
    gradient agreed with the reference. The cause, pinned in session 18 (tools/probe_sdpa_backward.py,
    H200, batch 2, 128 heads, 2048 tokens, bfloat16): a transposed gradient alone comes out right (dq
    0.020 against float64, the math backend's 0.012), but after one backward with a contiguous gradient
    at the same shapes it comes out wrong (dq 4.88): a plan cached without the gradient's strides is
    reused for another layout. One layout for every call, the output's, never meets that. Dense
    attention has it too (session 19, tests/test_gpu_numerics.py, gqa_8 at batch 2, 512 tokens: dq 5.32
    against the bfloat16 reference's 0.016), so every cuDNN call here goes through this."""

    @staticmethod
    def forward(ctx, out):
        ctx.strides = out.stride()
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        if grad.stride() == ctx.strides:
            return grad
        return torch.empty_strided(grad.shape, ctx.strides, dtype=grad.dtype, device=grad.device).copy_(grad)


def attend_through(backend, q, k, v, **options):
    """SDPA through one backend; cuDNN's output hands its gradient on in its own strides."""
    with sdpa_kernel(backend):
        out = F.scaled_dot_product_attention(q, k, v, **options)
    if backend is SDPBackend.CUDNN_ATTENTION and out.requires_grad:
        return _GradientInOutputStrides.apply(out)
    return out


def fastest(q, k, v, **options):
    """The call `F.scaled_dot_product_attention(q, k, v, **options)` through the fastest backend that
    accepts it, its name in the call's `backend`. The MLA family's forms come through here too."""
    timings, errors = {}, {}
    for backend in FUSED_BACKENDS + (FALLBACK_BACKEND,):
        if backend is FALLBACK_BACKEND and timings:
            break

        def call(backend=backend):
            return attend_through(backend, q, k, v, **options)

        try:
            with warnings.catch_warnings():  # each refusing backend warns why; the error says it too
                warnings.simplefilter("ignore", UserWarning)
                # after an untimed first call: library handles, cuDNN plan build
                timings[backend] = (per_call_ms(call, q.device, calls=TRIAL_CALLS), call)
        except RuntimeError as error:  # "No available kernel" for this backend and these inputs
            errors[backend.name] = str(error).splitlines()[0]
    if not timings:
        raise RuntimeError(f"no SDPA backend accepts this call: {errors}")
    best = min(timings, key=lambda b: timings[b][0])
    call = timings[best][1]
    call.backend = best.name
    return call


def prepare_function(variant, problem):
    """`prepare`'s call as a function of any q, k, v of the problem's shapes (a block's projections):
    the mask and the fastest backend chosen here, on the problem's own tensors."""
    attn_mask, is_causal = mask_arguments(variant, problem)
    options = dict(attn_mask=attn_mask, is_causal=is_causal, enable_gqa=problem.q.shape[1] != problem.k.shape[1])
    chosen = fastest(problem.q, problem.k, problem.v, **options).backend
    (backend,) = [b for b in FUSED_BACKENDS + (FALLBACK_BACKEND,) if b.name == chosen]

    def attend(q, k, v):
        return attend_through(backend, q, k, v, **options)

    attend.backend = f"sdpa {backend.name}"
    return attend


def prepare(variant, problem):
    attn_mask, is_causal = mask_arguments(variant, problem)
    q, k, v = problem.q, problem.k, problem.v
    return fastest(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=q.shape[1] != k.shape[1])
