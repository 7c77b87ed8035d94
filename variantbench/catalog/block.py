"""The block family: one transformer layer as a recipe of catalog pieces, named after the model whose
config gives its dimensions (variantbench/block_shapes.py), its reference composed of the pieces'
references (reference/block.py), and the budget ratio against the llama-3-8b block per useful work.

A recipe is data: its norm, its attention variant (an attention-family entry, so every attention
implementation that runs the variant can serve the block), its MLP or the MoE router it routes with
(a moe-family variant), its residual structure and positions. `fused` runs each piece through its
family's fastest fused implementation at the block's shape (the choice recorded with the results),
`liger` the same with liger-kernel's norms, activation and RoPE (a peer), `compiled` torch.compile of
the reference block. Covered so far: the dense and MoE GQA blocks, DeepSeek-V3's latent-attention MoE
block, Qwen3-Next's gated-DeltaNet MoE block (prefill), a ViT encoder block and a mixture-of-depths block.
"""

import dataclasses
import importlib.util
from dataclasses import dataclass

import torch

from variantbench.block_shapes import BLOCK_SHAPES, BlockShape
from variantbench.catalog import Family, Implementation, check_numbers_in_name, sample_rows
from variantbench.catalog.attention import AttentionVariant
from variantbench.catalog.attention_support import REFERENCE_MAX_SCORE_BYTES
from variantbench.catalog.block_problem import BlockProblem, CheckRows
from variantbench.catalog.block_work import work
from variantbench.catalog.linear import VARIANTS as LINEAR_VARIANTS
from variantbench.catalog import moe as moe_catalog
from variantbench.catalog.mla import VARIANTS as MLA_VARIANTS
from variantbench.shapes import MoEShape


RESIDUALS = ("pre", "sandwich")


@dataclass(frozen=True)
class BlockVariant:
    name: str
    model: str  # block_shapes.BLOCK_MODELS: the dimensions
    attention: AttentionVariant
    norm: str = "rms"  # reference/block.py NORMS
    mlp: str = "swiglu"  # reference/block.py DENSE_MLPS, or "moe"
    router: str | None = None  # with mlp "moe": a moe-family variant's name
    residual: str = "pre"  # "pre": pre-norm; "sandwich": each piece's output normed too (Gemma-2)
    rope: bool = True
    qk_norm: bool = False  # Qwen3: RMS norm of each query and key head
    depth_capacity: float | None = None  # mixture-of-depths: the fraction of tokens the block processes
    baseline: bool = False
    note: str = ""
    # Runs that include the recipe unnamed (shapes.TIERS). A block case took 20-60 s of setup on an
    # H200 (its glue compiled, its float64 check): the 9 recipes' forwards alone took 265 s, and the
    # default tier was 670 s of its 10 minutes without blocks. So the baseline's recipe runs in every
    # tier (the default tier's one block), the others in the full one or where named.
    tier: str = "full"

    def __post_init__(self):
        check_numbers_in_name(self, {})
        if (self.mlp == "moe") != (self.router is not None):
            raise ValueError(f"BlockVariant {self.name!r}: an MoE block names its router, and only an MoE block")
        from reference.block import DENSE_MLPS, NORMS

        # the code asks "sandwich or not", "gated or not": a misspelt name must fail here, when the entry is made
        for what, value, known in (("residual", self.residual, RESIDUALS), ("norm", self.norm, tuple(NORMS)),
                                   ("mlp", self.mlp, (*DENSE_MLPS, "moe"))):
            if value not in known:
                raise ValueError(f"BlockVariant {self.name!r}: unknown {what} {value!r}; known: {', '.join(known)}")

    def unsupported(self, shape: BlockShape) -> str | None:
        if self.depth_capacity is not None and shape.phase == "decode":
            return ("mixture-of-depths picks a top-k over the whole sequence; at decode a causal predictor "
                    "decides, which is not modelled")
        if self.depth_capacity is not None and self.depth_capacity * shape.q_len < 1:
            return f"{self.depth_capacity} of {shape.q_len} tokens is no token"
        return self.attention.unsupported(shape.attention_shape(self.model))


CAUSAL_GQA = AttentionVariant("causal_gqa", note="causal, the model's own KV heads")

VARIANTS = (
    BlockVariant("llama-3-8b", "llama-3-8b", CAUSAL_GQA, baseline=True, tier="quick",
                 note="pre-norm RMSNorm, GQA with RoPE, SwiGLU MLP"),
    BlockVariant("gemma-2-9b-local", "gemma-2-9b", AttentionVariant("softcap_50_window_4096", softcap=50.0, window=4096),
                 norm="gemma_rms", mlp="geglu", residual="sandwich",
                 note="Gemma-2's sliding-window layer: scores capped at 50, 4096-key window, sandwich norms, GeGLU"),
    BlockVariant("gemma-2-9b-global", "gemma-2-9b", AttentionVariant("softcap_50", softcap=50.0),
                 norm="gemma_rms", mlp="geglu", residual="sandwich",
                 note="Gemma-2's global layer, alternating with the local one"),
    BlockVariant("qwen3-30b-a3b", "qwen3-30b-a3b", CAUSAL_GQA, mlp="moe", router="softmax_topk", qk_norm=True,
                 note="GQA (32 heads on 4) with QK-norm, 128 experts top-8"),
    BlockVariant("mixtral-8x7b", "mixtral-8x7b", AttentionVariant("sliding_window_4096", window=4096), mlp="moe",
                 router="softmax_topk", note="GQA with a 4096-key sliding window, 8 experts top-2"),
    BlockVariant("deepseek-v3", "deepseek-v3", MLA_VARIANTS[0], mlp="moe", router="sigmoid_grouped_topk",
                 note="multi-head latent attention (128 heads, a 512 latent cached), 256 experts top-8 and a shared one"),
    BlockVariant("qwen3-next", "qwen3-next-80b-a3b", LINEAR_VARIANTS[0], mlp="moe", router="softmax_topk", rope=False,
                 note="gated DeltaNet (16 key, 32 value heads, a short convolution, gated output norm), 512 experts top-10"),
    BlockVariant("vit-l16", "vit-l16", AttentionVariant("bidirectional", causal=False), norm="layer", mlp="gelu",
                 rope=False, note="encoder: bidirectional attention, LayerNorm, GELU MLP"),
    BlockVariant("llama-3-8b-depth", "llama-3-8b", CAUSAL_GQA, depth_capacity=0.125,
                 note="mixture-of-depths: a router sends each sequence's top 12.5% of tokens through the block"),
)


def _attention_piece_unsupported(variant, shape):
    piece = shape.attention_shape(variant.model)
    if variant.depth_capacity is not None or shape.config(variant.model).linear:
        return None  # the layer sees an eighth of the tokens; a linear layer keeps no scores
    score_bytes = piece.batch * piece.config.n_heads * piece.q_len * piece.kv_len * 4
    if score_bytes > REFERENCE_MAX_SCORE_BYTES:
        return (f"the reference attention materialises {score_bytes / 2**30:.0f} GiB of float32 scores here, over "
                f"its {REFERENCE_MAX_SCORE_BYTES / 2**30:.0f} GiB limit (checked on sampled rows instead)")
    return None


# torch.compile unrolls the reference MoE's loop over experts (moe.COMPILED_MAX_EXPERTS says why).
COMPILED_MAX_EXPERTS = 64


def _compiled_unsupported(variant, shape):
    if shape.config(variant.model).linear and shape.phase == "prefill":  # a decode step has no chunks
        return ("torch.compile fails on the chunked gated delta rule with the dynamic sizes the MoE's routing needs "
                "(TypeError: cannot determine truth value of Relational; torch 2.13, CPU)")
    moe = shape.config(variant.model).moe_config
    if moe is not None and moe.n_experts > COMPILED_MAX_EXPERTS:
        return (f"torch.compile unrolls the reference MoE's loop over {moe.n_experts} experts; compiled runs up "
                f"to {COMPILED_MAX_EXPERTS}")
    why = _attention_piece_unsupported(variant, shape)
    return f"torch.compile of the reference keeps its scores in memory: {why}" if why else None


def gradient_check_shape(variant, shape):
    """An MoE block whose experts' float64 gradient check would not fit (DeepSeek-V3's, 169 GiB) is
    checked with fewer routed experts (catalog/moe.py): (that shape, why), or None."""
    fewer = moe_catalog.gradient_check_experts(shape.config(variant.model).moe_config)
    return None if fewer is None else (dataclasses.replace(shape, moe_experts=fewer[0]), fewer[1])


def _linear_piece_untrained(shape):
    """Why no fused linear implementation that serves blocks (has `prepare_function`) has a backward on
    the shape's device, or None: on a GPU fla's (kernels/block/choice.py `serves` picks among them);
    on the CPU none, fla's kernels being CUDA's and ours forward-only."""
    from variantbench.catalog import family

    serving = [i for i in family("linear").implementations if i.fused and hasattr(i.load(), "prepare_function")]
    if any(i.backward and (shape.device == "cuda" or i.backward_on_cpu) for i in serving):
        return None
    return (f"no fused linear implementation trains a block on the {shape.device}: "
            + ", ".join(f"{i.name} {'has no backward there' if i.backward else 'is forward-only'}" for i in serving))


def _gradient_check_unsupported(variant, shape):
    return moe_catalog.gradient_check_unsupported(shape.config(variant.model).moe_config)


def _fused_backward_unsupported(variant, shape):
    why = _linear_piece_untrained(shape) if shape.config(variant.model).linear else None
    return why or _gradient_check_unsupported(variant, shape)


def _split_unsupported(mode):
    return lambda variant, shape: importlib.import_module("kernels.block.parallel").unsupported(variant, shape, mode)


def _liger_unsupported(variant, shape):
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (an optional extra: pip install '.[peers]')"
    # its RMSNorm, SwiGLU and GeGLU fail under TRITON_INTERPRET=1 (liger 0.8.5, triton 3.9; its RoPE runs)
    return None if shape.device == "cuda" else "liger-kernel runs on the GPU only, not in the Triton interpreter"


IMPLEMENTATIONS = (
    Implementation("reference", "reference.block", fused=False, backward=True, unsupported=_attention_piece_unsupported,
                   backward_unsupported=_gradient_check_unsupported),
    Implementation("fused", "kernels.block.fused", fused=True, backward=True, autotunes=True,
                   backward_unsupported=_fused_backward_unsupported),
    Implementation("compiled", "kernels.block.compiled", fused=True, backward=True, tier="full",
                   unsupported=_compiled_unsupported, backward_unsupported=_gradient_check_unsupported),
    Implementation("liger", "kernels.block.liger", fused=True, backward=True, autotunes=True, tier="full",
                   unsupported=_liger_unsupported, backward_unsupported=_fused_backward_unsupported),
    # Over every GPU of the machine (2 gloo processes on the CPU), forward only: what a split costs, not
    # B on A's device, so the budget verdict leaves them out (Family.judged).
    Implementation("tensor_parallel", "kernels.block.tensor_parallel", fused=True, backward=False, every_gpu=True,
                   tier="full", unsupported=_split_unsupported("tensor")),
    Implementation("sequence_parallel", "kernels.block.sequence_parallel", fused=True, backward=False,
                   every_gpu=True, tier="full", unsupported=_split_unsupported("sequence")),
    Implementation("sequence_parallel_overlapped", "kernels.block.sequence_parallel_overlapped", fused=True,
                   backward=False, every_gpu=True, tier="full", unsupported=_split_unsupported("sequence_overlapped")),
    Implementation("sequence_parallel_symm_mem", "kernels.block.sequence_parallel_symm_mem", fused=True,
                   backward=False, every_gpu=True, tier="full", unsupported=_split_unsupported("sequence_symm_mem")),
)

# Norm weights near 1 (Gemma's near 0, as it scales by 1 + w) but not exactly: a norm that dropped its
# weight would still pass at exactly 1.
NORM_SPREAD = 0.1


def make_problem(variant, shape: BlockShape, *, device, dtype, seed, requires_grad=False):
    """Seeded weights at 1/sqrt(fan-in) (unit-size activations through every matmul) and unit-normal
    tokens, never zeros; at decode a seeded random cache."""
    from variantbench.catalog import family

    config = shape.config(variant.model)
    gen = torch.Generator(device).manual_seed(seed)

    def randn(*size, scale=1.0, offset=0.0):
        t = torch.randn(*size, generator=gen, device=device, dtype=torch.float32).mul_(scale).add_(offset).to(dtype)
        return t.requires_grad_(requires_grad)

    dim, heads, kv_heads, head_dim = config.dim, config.n_heads, config.n_kv_heads, config.head_dim
    norm_offset = 0.0 if variant.norm == "gemma_rms" else 1.0

    def norm(size=dim):
        return randn(size, scale=NORM_SPREAD, offset=norm_offset)

    sandwich = variant.residual == "sandwich"
    problem = BlockProblem(
        config=config, x=randn(shape.batch, shape.q_len, dim), seed=seed,
        wo=randn(dim, heads * head_dim, scale=(heads * head_dim) ** -0.5),
        attn_norm=norm(), mlp_norm=norm(), post_attn_norm=norm() if sandwich else None,
        post_mlp_norm=norm() if sandwich else None,
        q_norm=randn(head_dim, scale=NORM_SPREAD, offset=1.0) if variant.qk_norm else None,
        k_norm=randn(head_dim, scale=NORM_SPREAD, offset=1.0) if variant.qk_norm else None,
        depth_router=randn(dim, scale=dim ** -0.5) if variant.depth_capacity is not None else None, shape=shape,
    )
    m, lin = config.mla_config, config.linear_config
    if lin is not None:
        from variantbench.shapes import LinearShape

        key, value = lin.n_qk_heads * lin.k_dim, lin.n_v_heads * lin.v_dim
        problem.w_qkvz = randn(2 * key + 2 * value, dim, scale=dim ** -0.5)
        problem.w_ba = randn(2 * lin.n_v_heads, dim, scale=dim ** -0.5)
        problem.conv_weight = randn(2 * key + value, config.conv, scale=config.conv ** -0.5)
        # decays near Qwen3-Next's: exp(A_log) in [1, 16], dt_bias near 0, so g = -exp(A_log) softplus(.)
        problem.a_log = randn(lin.n_v_heads, scale=0.5, offset=1.0)
        problem.dt_bias = randn(lin.n_v_heads, scale=0.5, offset=-2.0)
        problem.out_norm = norm(lin.v_dim)
        # its inputs train too, so that choosing the piece can time its backward; the block's own are
        # computed from x (kernels/block/fused.py), and the layer has no weights of its own
        linear = family("linear")
        decode = shape.phase == "decode"
        problem.linear = linear.make_problem(variant.attention, LinearShape(f"{shape.name}-linear", config.linear,
                                                                           shape.batch, shape.q_len, device=shape.device,
                                                                           decode=decode),
                                             device=device, dtype=dtype, seed=seed + 3, requires_grad=requires_grad)
        if decode:  # the channels are unit-sized (x unit-normal through 1/sqrt(dim) weights); the state as the rule leaves one
            problem.conv_state = torch.randn(shape.batch, config.conv - 1, 2 * key + value, generator=gen,
                                             device=device, dtype=torch.float32).to(dtype)
            problem.delta_state = problem.linear.state.clone()
    elif m is None:
        problem.wq = randn(heads * head_dim, dim, scale=dim ** -0.5)
        problem.wk, problem.wv = (randn(kv_heads * head_dim, dim, scale=dim ** -0.5) for _ in range(2))
    else:
        from variantbench.shapes import MLAShape

        problem.w_dq = randn(m.q_lora_rank, dim, scale=dim ** -0.5)
        problem.q_a_norm = norm(m.q_lora_rank)
        problem.w_uq = randn(heads * m.qk_dim, m.q_lora_rank, scale=m.q_lora_rank ** -0.5)
        problem.w_dkv = randn(m.kv_lora_rank + m.qk_rope_dim, dim, scale=dim ** -0.5)
        problem.kv_a_norm = norm(m.kv_lora_rank)
        mla = family("mla")
        latent = MLAShape(f"{shape.name}-mla", config.mla, shape.batch, shape.q_len, shape.kv_len, device=shape.device)
        # its queries and cache train too, so that choosing the piece can time their backward; the block's
        # own are computed from x (kernels/block/fused.py), and its gradients name only the up-projections
        problem.mla = mla.make_problem(variant.attention, latent, device=device, dtype=dtype, seed=seed + 2,
                                       requires_grad=requires_grad)
        if shape.phase == "decode":
            problem.latent_cache = problem.mla.cache.clone()
    if variant.mlp == "moe":
        moe = family("moe")
        tokens = MoEShape(f"{shape.name}-moe", config.moe, shape.batch * shape.q_len, device=shape.device)
        problem.moe = moe.make_problem(moe.variant(variant.router), tokens, device=device, dtype=dtype, seed=seed + 1,
                                       requires_grad=requires_grad)
    else:
        up = 2 * config.ffn_dim if variant.mlp in ("swiglu", "geglu") else config.ffn_dim
        problem.w13 = randn(up, dim, scale=dim ** -0.5)
        problem.w2 = randn(dim, config.ffn_dim, scale=config.ffn_dim ** -0.5)
    if shape.phase == "decode" and m is None and lin is None:
        problem.k_cache = torch.randn(shape.batch, kv_heads, shape.kv_len, head_dim, generator=gen, device=device,
                                      dtype=torch.float32).to(dtype)
        problem.v_cache = torch.randn(problem.k_cache.shape, generator=gen, device=device, dtype=torch.float32).to(dtype)
    return problem


def check_views(variant, problem, out, rows):
    """Up to `rows` sampled positions of every sequence, and the reference block on exactly those
    rows (keys and values from every token: B x H x rows x S scores at any shape). A row whose MoE
    routing is near a tie (reference/block.py routing_decided) is zero on both sides, in its output
    and so in its gradients; decided once a problem and seed, so its float64 copies compare the same
    rows (cases.prepare_checked refills the problem with the timing seed's inputs and seed).
    Rows compared: the sequences' decided rows (B x positions where every one is)."""
    from reference import block as reference_block

    known = problem.check_rows
    if known is None or (known.seed, known.asked) != (problem.seed, rows):  # none yet, or refilled
        picked = sample_rows(problem.x.shape[1], rows, problem.seed).to(problem.device)
        decided = reference_block.routing_decided(variant, problem, picked)
        if not decided.any():
            raise ValueError(f"block {variant.name}: the MoE routing of every sampled row is within the working "
                             f"dtype's error of a tie ({decided.numel()} rows): nothing the check could compare")
        problem.check_rows = CheckRows(problem.seed, rows, picked, decided[..., None])
    picked, decided = problem.check_rows.positions, problem.check_rows.decided

    def reference(dtype):
        p = problem.converted(dtype)
        return reference_block.block(variant, p.config, p, p.x, rows=picked, cache=p.cache) * decided.to(dtype)

    if out.shape[1] != problem.x.shape[1]:  # a rank's tokens (sequence parallel): every rank's make the output
        out = torch.cat(problem.check_outputs, dim=1).to(problem.device)
    return reference, out[:, picked] * decided.to(out.dtype), int(decided.sum())


FAMILY = Family(
    name="block",
    variants=VARIANTS,
    implementations=IMPLEMENTATIONS,
    shapes=BLOCK_SHAPES,
    baseline_implementation="fused",
    make_problem=make_problem,
    check_views=check_views,
    work=work,
    gradient_check_shape=gradient_check_shape,
)
