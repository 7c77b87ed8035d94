"""The mla family: multi-head latent attention, compressed KV (DeepSeek-V2/V3), its implementations,
baseline, shapes and work model.

A variant is an MLA geometry's use: `mla` is DeepSeek-V3's attention call (its dims come from the
shape's model, variantbench.shapes.MLA_MODELS), and through SDPA the family baseline. The math, and
the two forms an implementation may compute it in (decompressed at prefill, absorbed at decode), are
reference/mla.py. Every implementation takes the same problem: the queries' two parts, the latent
cache as the serving engine stores it (one row of rank + rope values per token) and the two up-
projections; each returns (B, H, Sq, v_head).

Training runs prefill, the decompressed form: the reference's backward is autograd's, SDPA's and Flex's
their own, with gradients to both query parts, the cache (its latent and RoPE-key halves) and both up-
projections. The absorbed decode form and our decode kernel are forward-only.
"""

from dataclasses import dataclass

import torch

from reference import mla as reference_mla
from variantbench.catalog import Family, Implementation, NamedVariant, sample_rows
from variantbench.shapes import MLA_SHAPES, MLAShape

# As attention's reference (variantbench/catalog/attention.py): over 8 GiB of float32 scores it is
# not run whole; the check still compares sampled query rows against it.
REFERENCE_MAX_SCORE_BYTES = 8 * 2**30


@dataclass(frozen=True)
class MLAVariant(NamedVariant):
    """An MLA geometry's use; its dims come from the shape's model."""


VARIANTS = (
    MLAVariant("mla", baseline=True, note="DeepSeek-V3: a 512 latent + 64 RoPE key per token, 128 heads of 192 / 128"),
)


def _reference_unsupported(variant, shape):
    score_bytes = shape.batch * shape.config.n_heads * shape.q_len * shape.kv_len * 4
    if score_bytes > REFERENCE_MAX_SCORE_BYTES:
        return (f"the reference materialises {score_bytes / 2**30:.0f} GiB of float32 scores here, over its "
                f"{REFERENCE_MAX_SCORE_BYTES / 2**30:.0f} GiB limit (checked on sampled rows instead)")
    return None


def _compiled_unsupported(variant, shape):
    why = _reference_unsupported(variant, shape)
    return f"torch.compile of the reference keeps its scores in memory: {why}" if why else None


def _absorbed_backward_unsupported(variant, shape):
    # cases.backward_unsupported refuses any decode shape first; this says it where a piece is picked
    # for a trained block (kernels/block/choice.py `serves`), which asks the implementation alone.
    if shape.q_len != shape.kv_len:
        return ("the absorbed form over the latent cache serves decode, which is inference: training runs "
                "prefill's decompressed form")
    return None


def _triton_unsupported(variant, shape):
    if shape.phase == "prefill":
        return "our kernel is the absorbed decode form (FlashMLA's); prefill runs decompressed through SDPA and Flex"
    return None


IMPLEMENTATIONS = (
    # Eager torch at prefill: autograd through the latent's expansion and the attention.
    Implementation("reference", "reference.mla", fused=False, backward=True, unsupported=_reference_unsupported,
                   backward_unsupported=_absorbed_backward_unsupported),
    # SDPA's own backward over the decompressed keys (192 wide) and values (128); autograd sums the
    # shared RoPE key's gradient over the heads it was expanded to.
    Implementation("sdpa", "kernels.mla.sdpa", fused=True, backward=True,
                   backward_unsupported=_absorbed_backward_unsupported),
    # torch 2.13's FlexAttention raises NotImplementedError for a backward on the CPU (as attention's flex).
    Implementation("flex", "kernels.mla.flex", fused=True, backward=True, backward_on_cpu=False,
                   backward_unsupported=_absorbed_backward_unsupported),
    Implementation("triton", "kernels.mla.triton_decode", fused=True, backward=False, needs_triton=True,
                   autotunes=True, ours=True, unsupported=_triton_unsupported),
    # torch.compile of the reference; its backward is autograd through the compiled graph.
    Implementation("compiled", "kernels.mla.compiled", fused=True, backward=True, tier="full",
                   unsupported=_compiled_unsupported, backward_unsupported=_absorbed_backward_unsupported),
)


@dataclass
class MLAProblem:
    """q_nope (B, H, Sq, qk_nope) and q_pe (B, H, Sq, qk_rope), RoPE applied; cache (B, Skv, rank +
    qk_rope), the latent then the RoPE key (applied) of each token; w_uk (H, qk_nope, rank) and
    w_uv (H, v_head, rank)."""

    config: object
    q_nope: torch.Tensor
    q_pe: torch.Tensor
    cache: torch.Tensor
    w_uk: torch.Tensor
    w_uv: torch.Tensor
    seed: int

    @property
    def batch(self):
        return self.q_nope.shape[0]

    @property
    def q_len(self):
        return self.q_nope.shape[2]

    @property
    def kv_len(self):
        return self.cache.shape[1]

    @property
    def scale(self):
        """DeepSeek-V3's softmax scale, 1 / sqrt(qk_nope + qk_rope) (its YaRN factor, 1 below the
        original 4k context, left out)."""
        return self.config.qk_dim ** -0.5

    @property
    def device(self):
        return self.cache.device

    def inputs(self):
        return {"q_nope": self.q_nope, "q_pe": self.q_pe, "cache": self.cache, "w_uk": self.w_uk, "w_uv": self.w_uv}

    def weights(self):
        """The layer's trained weights: the latent's two up-projections (a block's other MLA weights
        are its own fields)."""
        return {"w_uk": self.w_uk, "w_uv": self.w_uv}

    def grad_inputs(self):
        return (self.q_nope, self.q_pe, self.cache, *self.weights().values())


def make_problem(variant, shape: MLAShape, *, device, dtype, seed, requires_grad=False):
    """Seeded normal queries and cache (unit scale: DeepSeek normalises the latent before caching it),
    RoPE applied to the rope parts at their positions; up-projections scaled 1/sqrt(rank) so each
    head's keys and values are unit-sized too."""
    config = shape.config
    gen = torch.Generator(device).manual_seed(seed)

    def randn(*size, scale=1.0):
        return torch.randn(*size, generator=gen, device=device, dtype=torch.float32).mul_(scale)

    rank, rope_dim, heads = config.kv_lora_rank, config.qk_rope_dim, config.n_heads
    positions = torch.arange(shape.kv_len, device=device)
    cache = randn(shape.batch, shape.kv_len, rank + rope_dim)
    cache[..., rank:] = reference_mla.rope(cache[..., rank:], positions)
    q_pe = reference_mla.rope(randn(shape.batch, heads, shape.q_len, rope_dim), positions[shape.kv_len - shape.q_len:])
    problem = MLAProblem(
        config=config,
        q_nope=randn(shape.batch, heads, shape.q_len, config.qk_nope_dim).to(dtype),
        q_pe=q_pe.to(dtype),
        cache=cache.to(dtype),
        w_uk=randn(heads, config.qk_nope_dim, rank, scale=rank ** -0.5).to(dtype),
        w_uv=randn(heads, config.v_head_dim, rank, scale=rank ** -0.5).to(dtype),
        seed=seed,
    )
    for t in problem.grad_inputs():
        t.requires_grad_(requires_grad)
    return problem


def check_views(variant, problem, out, rows):
    """Up to `rows` sampled query rows, against the reference in the phase's form and the reference's
    dtype: decompressed at decode would expand the whole cache per head (128 GiB in float64 at
    batch 64 x 8k); tests/test_mla.py checks the two forms equal in float64."""
    picked = sample_rows(problem.q_len, rows, problem.seed).to(problem.device)
    attend = reference_mla.form(problem)

    def reference(dtype):
        return attend(
            problem.q_nope[:, :, picked].to(dtype), problem.q_pe[:, :, picked].to(dtype), problem.cache.to(dtype),
            problem.w_uk.to(dtype), problem.w_uv.to(dtype), scale=problem.scale, q_len=problem.q_len, q_idx=picked)

    return reference, out[:, :, picked], int(picked.numel())


def work(variant, problem, backward=False):
    """(FLOPs, bytes) of the form the phase is served in, on visible (causal) pairs only.

    Prefill, decompressed: expanding each token's latent to H keys and values (2 rank (qk_nope +
    v_head) FLOPs a head), then per visible pair and head 2 (qk_nope + qk_rope) + 2 v_head. Decode,
    absorbed: per pair and head 2 (rank + qk_rope) + 2 rank, plus folding W_uk into each query and
    W_uv out of each output (2 rank qk_nope + 2 rank v_head per query and head). Bytes: the cache once,
    both up-projections, the queries in and the output out.

    Backward (prefill only), as the attention and block families count it: the attention 2.5x its
    forward (QK^T recomputed, dV, dP, dQ, dK), the expansion's matmuls 2x (the latent's and the up-
    projections' gradients); bytes 3x (inputs and output read again with the output's gradient, every
    input's gradient written)."""
    config, batch, q_len, kv_len = problem.config, problem.batch, problem.q_len, problem.kv_len
    heads, rank = config.n_heads, config.kv_lora_rank
    offset = kv_len - q_len
    pairs = batch * (q_len * (offset + 1) + q_len * (q_len - 1) // 2)  # query i sees offset + i + 1 keys
    if q_len == kv_len:
        expansion = 2 * batch * kv_len * heads * rank * (config.qk_nope_dim + config.v_head_dim)
        attention = 2 * heads * pairs * (config.qk_dim + config.v_head_dim)
        flops = 3 * expansion + attention * 7 // 2 if backward else expansion + attention
    elif backward:
        raise ValueError(f"MLA at q_len {q_len} of kv_len {kv_len} is the absorbed decode form: it has no backward")
    else:
        flops = (2 * heads * pairs * (2 * rank + config.qk_rope_dim)
                 + 2 * batch * q_len * heads * rank * (config.qk_nope_dim + config.v_head_dim))
    elem = problem.cache.element_size()
    nbytes = elem * (problem.cache.numel() + problem.w_uk.numel() + problem.w_uv.numel() + problem.q_nope.numel()
                     + problem.q_pe.numel() + batch * heads * q_len * config.v_head_dim)
    return flops, 3 * nbytes if backward else nbytes


FAMILY = Family(
    name="mla",
    variants=VARIANTS,
    implementations=IMPLEMENTATIONS,
    shapes=MLA_SHAPES,
    baseline_implementation="sdpa",
    make_problem=make_problem,
    check_views=check_views,
    work=work,
)
