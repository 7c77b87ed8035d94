"""The moe family: router variants, implementations, baseline, shapes and work model.

A variant is its router (and, through the shape's model, its top-k, groups and shared expert):
`softmax_topk` (Mixtral: softmax, top-k, renormalised) is the established one and, through
`grouped_mm`, the family baseline; `sigmoid_grouped_topk` is DeepSeek-V3's (sigmoid scores, a
selection-only per-expert bias, group-limited top-k). The math is `reference/moe.py`.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from reference import moe as reference_moe
from variantbench.catalog import Family, Implementation, Unsupported, check_numbers_in_name, sample_rows
from variantbench.shapes import MOE_SHAPES, MoEShape


@dataclass(frozen=True)
class MoEVariant:
    """`router` names a router of reference/moe.py's ROUTERS (each implementation has its own table of
    them). A name, not the function: kernels never import the reference, and a name can be checked
    here, when the entry is made, so an unknown router fails before anything runs. Top-k, groups and
    the routed scale come from the shape's model, so a name carries no numbers.

    A plug-in's new router is the function itself, of ROUTERS' signature: (logits (T, E) float32, the
    model's config, selection bias (E,) float32) -> (experts (T, k) int64, weights (T, k) float32).
    The reference and grouped_mm call it as they call their own; our Triton kernel fuses only its own
    routers."""

    name: str
    router: str | Callable
    baseline: bool = False
    note: str = ""
    tier: str = "quick"  # the lowest tier whose runs include it unless named (variantbench.shapes.TIERS)

    def __post_init__(self):
        reference_moe.router(self.router)
        check_numbers_in_name(self, {})

    def unsupported(self, shape) -> str | None:
        return None


VARIANTS = (
    MoEVariant("softmax_topk", "softmax_topk", baseline=True, note="Mixtral: softmax, top-k, weights renormalised"),
    MoEVariant("sigmoid_grouped_topk", "sigmoid_grouped_topk",
               note="DeepSeek-V3: sigmoid, selection-only bias, group-limited top-k, weights x routed scale",
               # Nightly, at its own model's shapes too: at Mixtral's its four timed cases were ~25 s of
               # 75ceccd's 643 s default tier (H200, session 15), over the 10 minutes.
               tier="full"),
)


def _grouped_mm_unsupported(variant, shape):
    if not hasattr(torch, "_grouped_mm"):
        return f"torch {torch.__version__} has no torch._grouped_mm"
    return None


def _triton_unsupported(variant, shape):
    if callable(variant.router):
        return f"our kernel fuses its own routers only; {variant.name}'s router {variant.router.__name__} is a plug-in's"
    per_group = shape.config.n_experts // shape.config.n_groups
    if variant.router == "sigmoid_grouped_topk" and per_group & (per_group - 1):
        return f"our group-limited router needs a power-of-two group size, not {per_group}"
    return _grouped_mm_unsupported(variant, shape)


# Dynamo traces the reference's loop over experts into one graph, a matmul pair per expert: Mixtral's 8
# compiled and checked in 18.6 s on an H200 host; DeepSeek-V3's 256 had not finished after 300 s
# (2026-11-28, `variantbench try sigmoid_grouped_topk --shape deepseek-v3-prefill-t4k-uniform`).
# Qwen3-MoE's 128 is unmeasured, so the bound stays at what was seen to compile.
COMPILED_MAX_EXPERTS = 64


def _compiled_unsupported(variant, shape):
    if shape.config.n_experts > COMPILED_MAX_EXPERTS:
        return (f"torch.compile unrolls the reference's loop over {shape.config.n_experts} experts into one "
                f"graph (256 took over 300 s to compile); compiled runs up to {COMPILED_MAX_EXPERTS}")
    return None


# The gradient check (variantbench.cases.check_gradients) holds float64 copies of the experts' weights
# and of their gradients, 16 bytes a weight, beside the working ones: DeepSeek-V3's 11.3e9 (256 routed
# experts and a shared one) are 169 GiB of them, over an H200's 141 GB; Mixtral's 1.4e9, 21 GiB, leave room
# on an 80 GB H100 for its five bfloat16 copies (weights, gradients, the low-precision reference's two, the
# timed problem's: 13 GiB). Not counted: the reference's backward through `w13[expert]` allocates a zero
# tensor of the whole weight (13 GB in float64 at DeepSeek-V3's stand-in below, which still fits).
GRADIENT_CHECK_MAX_BYTES = 40 * 2**30


def gradient_check_experts(config):
    """(routed experts, note): as many of the layer's routed experts as its gradient check holds, in
    whole groups, and why it holds fewer than all; None where it holds them all or there are none
    (a dense block). The same code runs at any expert count (the routing, the permutation and the
    grouped products loop over experts), so a layer checked at fewer experts stands in for its own.
    Unsupported where not even the fewest that route a token fit."""
    if config is None:  # a block without experts
        return None
    per_expert = 16 * 3 * config.dim * config.ffn_dim
    if per_expert * (config.n_experts + config.n_shared) <= GRADIENT_CHECK_MAX_BYTES:
        return None
    fit = (GRADIENT_CHECK_MAX_BYTES // per_expert - config.n_shared) // config.n_groups * config.n_groups
    fewest = -(-config.top_k // config.topk_groups) * config.n_groups  # every eligible group holds a share
    if fit < fewest:
        raise Unsupported(f"the gradient check of {config.name}'s experts needs {fewest} of them in float64, "
                          f"over its {GRADIENT_CHECK_MAX_BYTES / 2**30:.0f} GiB")
    weights = 3 * config.dim * config.ffn_dim * (config.n_experts + config.n_shared)
    return fit, (f"gradients checked at {fit} of the {config.n_experts} routed experts: all of them and their "
                 f"gradients in float64 are {16 * weights / 2**30:.0f} GiB, over the check's "
                 f"{GRADIENT_CHECK_MAX_BYTES / 2**30:.0f} GiB")


def gradient_check_shape(variant, shape):
    """(the shape the gradient check runs at, why) where the layer's own is too large, else None."""
    fewer = gradient_check_experts(shape.config)
    return None if fewer is None else (replace(shape, model=f"{shape.model}@{fewer[0]}"), fewer[1])


def gradient_check_unsupported(config):
    """Why not even the gradient check's fewest experts fit (no backward then), or None (no experts
    too): said before the case is prepared, as the catalog's refusals are."""
    try:
        gradient_check_experts(config)
    except Unsupported as why:
        return str(why)
    return None


def _gradient_check_unsupported(variant, shape):
    return gradient_check_unsupported(shape.config)


IMPLEMENTATIONS = (
    # Eager torch: its backward is autograd's (the routing weights carry the router's gradient; the
    # chosen experts, integers, carry none).
    Implementation("reference", "reference.moe", fused=False, backward=True,
                   backward_unsupported=_gradient_check_unsupported),
    # torch._grouped_mm has an autograd formula; the gather, index_add and routing around it are torch's.
    Implementation("grouped_mm", "kernels.moe.grouped_mm", fused=True, backward=True,
                   unsupported=_grouped_mm_unsupported, backward_unsupported=_gradient_check_unsupported),
    Implementation("triton", "kernels.moe.triton_moe", fused=True, backward=False, unsupported=_triton_unsupported,
                   needs_triton=True, ours=True),
    # torch.compile of the reference, with a graph break where routing sizes the experts' rows
    # (kernels/moe/compiled.py); forward-only, and only where its loop compiles.
    Implementation("compiled", "kernels.moe.compiled", fused=True, backward=False, tier="full",
                   unsupported=_compiled_unsupported),
)


@dataclass
class MoEProblem:
    """x (T, dim); router_weight (E, dim); selection_bias (E,) float32. Expert weights in nn.Linear's
    (out, in) layout, as checkpoints store them and grouped GEMM kernels read them (K contiguous):
    w13 (E, 2 ffn, dim) gate then up; w2 (E, dim, ffn); the shared expert's shared13 (2 ffn_s, dim)
    and shared2 (dim, ffn_s), or None."""

    config: object
    x: torch.Tensor
    router_weight: torch.Tensor
    selection_bias: torch.Tensor
    w13: torch.Tensor
    w2: torch.Tensor
    shared13: torch.Tensor | None
    shared2: torch.Tensor | None
    seed: int

    @property
    def device(self):
        return self.x.device

    def inputs(self):
        return {"x": self.x}

    def weights(self):
        """The layer's trained weights: the router's and the experts' (the selection bias is no weight a
        gradient trains: DeepSeek-V3 moves it by the experts' load)."""
        return {name: t for name, t in (("router_weight", self.router_weight), ("w13", self.w13), ("w2", self.w2),
                                        ("shared13", self.shared13), ("shared2", self.shared2)) if t is not None}

    def grad_inputs(self):
        return (self.x, *self.weights().values())


ZIPF_EXPONENT = 1.2
ZIPF_LOAD_DIRECTION_NORM = 4.0  # x's mean along the load direction; router offsets are log-probabilities
LOAD_STRUCTURE_SEED = 20_261_128


def make_problem(variant, shape: MoEShape, *, device, dtype, seed, requires_grad=False):
    """Seeded normal tokens and weights, scaled so every matmul keeps unit-size values (weights
    1/sqrt(fan-in)). Zipf load: tokens share a mean direction u (|x.u| about 4) and expert e's router
    row gets log(p_e)/4 along u, so its logit moves by about log p_e, p_e ~ 1/rank^1.2 in a seeded
    expert order."""
    config = shape.config
    gen = torch.Generator(device).manual_seed(seed)

    def randn(*size, scale=1.0):
        # Drawn in the working dtype and scaled in place: DeepSeek-V3's w13 drawn in float32 and then
        # scaled is two 28 GiB temporaries, which ran an 80 GB H100 out of memory.
        return torch.randn(*size, generator=gen, device=device, dtype=dtype).mul_(scale)

    n_experts, dim, ffn = config.n_experts, config.dim, config.ffn_dim
    x = torch.randn(shape.tokens, dim, generator=gen, device=device, dtype=torch.float32)
    router_weight = torch.randn(n_experts, dim, generator=gen, device=device, dtype=torch.float32) / dim ** 0.5
    if shape.skew == "zipf":
        # The load's direction and expert order come from the shape, not the seed: the timed problem
        # takes the timing seed's tokens and keeps the check seed's router (cases.prepare_checked), so
        # with a direction each, the timed load was near uniform (8 experts: hottest 1.11x fair, not 3x).
        structure = torch.Generator(device).manual_seed(LOAD_STRUCTURE_SEED)
        direction = torch.randn(dim, generator=structure, device=device, dtype=torch.float32)
        direction /= direction.norm()
        rank = torch.randperm(n_experts, generator=structure, device=device).float() + 1
        log_p = -ZIPF_EXPONENT * rank.log()
        log_p -= torch.logsumexp(log_p, 0)
        x += ZIPF_LOAD_DIRECTION_NORM * direction
        router_weight += (log_p / ZIPF_LOAD_DIRECTION_NORM)[:, None] * direction
    selection_bias = 0.01 * torch.randn(n_experts, generator=gen, device=device, dtype=torch.float32)
    shared_ffn = config.n_shared * ffn
    problem = MoEProblem(
        config=config,
        x=x.to(dtype),
        router_weight=router_weight.to(dtype),
        selection_bias=selection_bias,
        w13=randn(n_experts, 2 * ffn, dim, scale=dim ** -0.5),
        w2=randn(n_experts, dim, ffn, scale=ffn ** -0.5),
        shared13=randn(2 * shared_ffn, dim, scale=dim ** -0.5) if shared_ffn else None,
        shared2=randn(dim, shared_ffn, scale=shared_ffn ** -0.5) if shared_ffn else None,
        seed=seed,
    )
    for t in problem.grad_inputs():
        t.requires_grad_(requires_grad)
    return problem


def check_views(variant, problem, out, rows):
    """Up to `rows` sampled tokens (a token's output depends on no other token), leaving out any whose
    routing flips between float32 and float64 logits: a near-tie that rounding may break either way,
    where any two correct implementations may disagree."""
    picked = sample_rows(problem.x.shape[0], rows, problem.seed).to(problem.x.device)
    x = problem.x[picked]
    args = (problem.router_weight, problem.selection_bias)
    experts32 = reference_moe.route(variant.router, problem.config, x, *args)[0]
    experts64 = reference_moe.route(variant.router, problem.config, x.double(), *(a.double() for a in args))[0]
    stable = (experts32.sort(-1).values == experts64.sort(-1).values).all(-1)
    picked, x = picked[stable], x[stable]

    def reference(dtype):
        return reference_moe.moe(variant.router, problem.config, x, *args, problem.w13, problem.w2, problem.shared13,
                   problem.shared2, compute_dtype=dtype)

    return reference, out[picked], int(picked.numel())


def work(variant, problem, backward=False):
    """(FLOPs, bytes) the routed tokens really need: per (token, expert) pair three dim x ffn matmuls
    (gate, up, down), 6 dim ffn FLOPs; the shared expert on every token; the router's T x dim x E.
    Bytes: the weights of the experts at least one token reached (decode reads only those), the shared
    expert and router weights, the tokens in and out. Backward: each matmul's input and weight
    gradients, twice its FLOPs (3x in all, as the block family counts); the weights' gradients written
    and the tokens' gradient in and out, twice the bytes."""
    config = problem.config
    tokens, dim, ffn = problem.x.shape[0], config.dim, config.ffn_dim
    experts, _ = reference_moe.route(variant.router, config, problem.x, problem.router_weight, problem.selection_bias)
    hit = int(torch.unique(experts).numel())
    shared_ffn = config.n_shared * ffn
    flops = 6 * dim * ffn * experts.numel() + 6 * dim * shared_ffn * tokens + 2 * tokens * dim * config.n_experts
    elem = problem.x.element_size()
    nbytes = elem * (3 * dim * ffn * hit + 3 * dim * shared_ffn + config.n_experts * dim + 2 * tokens * dim)
    return (3 * flops, 2 * nbytes) if backward else (flops, nbytes)


FAMILY = Family(
    name="moe",
    variants=VARIANTS,
    implementations=IMPLEMENTATIONS,
    shapes=MOE_SHAPES,
    baseline_implementation="grouped_mm",
    make_problem=make_problem,
    check_views=check_views,
    work=work,
    gradient_check_shape=gradient_check_shape,
)
