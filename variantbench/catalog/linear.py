"""The linear family: linear attention, its implementations, baseline, shapes and work model.

`gated_deltanet` is Qwen3-Next's linear-attention layer (the gated delta rule, reference/
linear_attention.py), through flash-linear-attention's fused chunked kernel the family baseline (a
peer, `fla-core`, an optional extra; skipped with the reason where it is not installed). Ours is
kernels/linear/triton_gdn.py, the same chunked algorithm. A state
replaces the KV cache, so the cost grows with tokens, not tokens squared: the question a hybrid model
asks is where that wins against causal GQA, at the same shape (variantbench try --against).

Training: the reference's backward is autograd's through the chunked form, fla's its own kernels',
compiled's autograd through the compiled graph, with gradients to q, k, v, the log-decays g and the
write strengths beta. Our kernel is forward-only.

Decode (a shape with `decode`): one new token a sequence from the state of the tokens before, the
reference's `step`; a call returns (output, new state) and both are checked. The state is read and
written once: bandwidth bound, as decode through a KV cache is.
"""

import importlib.util
from dataclasses import dataclass

import torch

from reference import linear_attention as reference_linear
from variantbench import device
from variantbench.catalog import Family, Implementation, NamedVariant, sample_rows
from variantbench.shapes import LINEAR_SHAPES, LinearShape

# Dynamo unrolls the chunked reference's loop over chunks into one graph: beyond this many chunks
# (4096 tokens) the compile is the run. Measured: not yet on a GPU (tiny-linear-t100, 2 chunks,
# compiles in seconds on the CPU).
COMPILED_MAX_CHUNKS = 64


@dataclass(frozen=True)
class LinearVariant(NamedVariant):
    """A linear-attention rule; its dims come from the shape's model."""


VARIANTS = (
    LinearVariant("gated_deltanet", baseline=True,
                  note="Qwen3-Next: the gated delta rule, 16 q/k heads, 32 value heads of 128"),
)


def _fla_unsupported(variant, shape):
    if importlib.util.find_spec("fla") is None:
        return "fla-core is not installed (an optional extra: pip install '.[peers]')"
    if shape.device != "cuda":
        return "fla-core's kernels are Triton kernels for the GPU"
    return None


# fla-core (0.6) refuses its gated backward (chunk_bwd_dqkwg) on Hopper under Triton from 3.4.0 up to
# 3.7.1, which computes it wrong there (fla's issue #640), unless tilelang serves that kernel instead.
# Every fla backward raised so on an H200 with Triton 3.6.0 (session 13); its forward runs.
FLA_WRONG_BACKWARD_TRITON = ((3, 4, 0), (3, 7, 1))


def _fla_backward_unsupported(variant, shape):
    if importlib.util.find_spec("triton") is None:
        return None
    import triton  # its own version, as fla reads it: the package may be named pytorch-triton

    triton_release = device.release(triton.__version__)
    first_bad, first_good = FLA_WRONG_BACKWARD_TRITON
    if shape.device != "cuda" or not first_bad <= triton_release < first_good:
        return None
    if importlib.util.find_spec("tilelang") is not None or (device.compute_capability() or (0,))[0] != 9:
        return None
    return (f"fla-core refuses its gated backward on Hopper under Triton {'.'.join(map(str, triton_release))} "
            "(fla's issue #640: wrong gradients from Triton 3.4.0 up to 3.7.1); Triton >= 3.7.1 or tilelang lifts it")


def _compiled_unsupported(variant, shape):
    chunks = -(-shape.tokens // reference_linear.CHUNK)
    if chunks > COMPILED_MAX_CHUNKS:
        return (f"torch.compile unrolls the chunked reference's loop over its {chunks} chunks; compiled runs up "
                f"to {COMPILED_MAX_CHUNKS}")
    return None


IMPLEMENTATIONS = (
    # Eager torch: autograd through the chunked form (its triangular solve included).
    Implementation("reference", "reference.linear_attention", fused=False, backward=True),
    # chunk_gated_delta_rule's own backward (an autograd.Function of Triton kernels): CUDA only, as its forward.
    Implementation("fla", "kernels.linear.fla", fused=True, backward=True, backward_on_cpu=False,
                   unsupported=_fla_unsupported, backward_unsupported=_fla_backward_unsupported),
    Implementation("triton", "kernels.linear.triton_gdn", fused=True, backward=False, needs_triton=True, ours=True,
                   autotunes=True),
    # torch.compile of the reference; its backward is autograd through the compiled graph.
    Implementation("compiled", "kernels.linear.compiled", fused=True, backward=True, tier="full",
                   unsupported=_compiled_unsupported),
)


@dataclass
class LinearProblem:
    """q, k (B, T, H, K) L2-normalised; v (B, T, HV, V); g (B, T, HV) float32 log-decays; beta
    (B, T, HV) write strengths in (0, 1)."""

    config: object
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    g: torch.Tensor
    beta: torch.Tensor
    seed: int
    state: torch.Tensor | None = None  # decode: (B, HV, V, K) float32, the state of the tokens before

    @property
    def scale(self):
        return self.config.k_dim ** -0.5

    @property
    def device(self):
        return self.v.device

    def inputs(self):
        state = {} if self.state is None else {"state": self.state}
        return {"q": self.q, "k": self.k, "v": self.v, "g": self.g, "beta": self.beta, **state}

    def grad_inputs(self):
        """Every input: a layer's backward carries q, k, v, g and beta back to the projections, the
        convolution and the gates that made them (the layer itself has no weights)."""
        return (self.q, self.k, self.v, self.g, self.beta)


# Qwen3-Next's decays sit close to 1: a = sigmoid(3 + N(0, 1)) is 0.95 at the median, 0.73 at the 2nd
# percentile; the tests take gates near 0 and near 1 besides.
DECAY_OFFSET = 3.0


def make_problem(variant, shape: LinearShape, *, device, dtype, seed, requires_grad=False):
    config = shape.config
    gen = torch.Generator(device).manual_seed(seed)

    def randn(*size):
        return torch.randn(*size, generator=gen, device=device, dtype=torch.float32)

    tokens, heads, v_heads = shape.tokens, config.n_qk_heads, config.n_v_heads
    q = torch.nn.functional.normalize(randn(shape.batch, tokens, heads, config.k_dim), dim=-1)
    k = torch.nn.functional.normalize(randn(shape.batch, tokens, heads, config.k_dim), dim=-1)
    problem = LinearProblem(
        config=config, q=q.to(dtype), k=k.to(dtype), v=randn(shape.batch, tokens, v_heads, config.v_dim).to(dtype),
        g=torch.nn.functional.logsigmoid(DECAY_OFFSET + randn(shape.batch, tokens, v_heads)),
        beta=torch.sigmoid(randn(shape.batch, tokens, v_heads)).to(dtype), seed=seed)
    if shape.decode:
        problem.state = decode_state(randn(shape.batch, v_heads, config.v_dim, config.k_dim))
    for t in problem.grad_inputs():
        t.requires_grad_(requires_grad)
    return problem


def decode_state(noise):
    """A state as the rule leaves one, in float32 as fla keeps it: with a near 0.95 it holds about the
    last 20 tokens' writes b v k^T (b ~ 0.5, v ~ N(0, 1), k of unit norm), so an entry is about
    0.5 sqrt(20 / K): noise of that size."""
    return noise * 0.5 * (20 / noise.shape[-1]) ** 0.5


def decode_views(out, state):
    """A decode step's output (B, 1, HV, V) and new state side by side, one row a sequence, in the
    output's dtype (the tolerance comes from the reference's error in it): the check covers the state
    the next step reads too."""
    return torch.cat([out.flatten(1), state.to(out.dtype).flatten(1)], dim=1)


def check_views(variant, problem, out, rows):
    """Up to `rows` sampled tokens of the output (each depends on every token before it, so the
    reference runs the whole sequence, in its chunked form: tests check it equals the recurrence).
    At decode, every sequence's output and new state against the step from the same state."""
    p = problem
    if p.state is not None:
        def step(dtype):
            return decode_views(*reference_linear.step(*(x.to(dtype) for x in (p.q, p.k, p.v, p.g, p.beta, p.state)),
                                                       scale=p.scale))

        return step, decode_views(*out), p.v.shape[0]
    picked = sample_rows(problem.v.shape[1], rows, problem.seed).to(problem.device)

    def reference(dtype):
        out = reference_linear.chunked(*(x.to(dtype) for x in (p.q, p.k, p.v, p.g, p.beta)), scale=p.scale)
        return out[:, picked]

    return reference, out[:, picked], int(picked.numel())


def work(variant, problem, backward=False):
    """(FLOPs, bytes) of the chunked algorithm (chunk C, per value head and chunk): K K^T strictly
    below the diagonal, C(C-1)K; Q K^T on and below it, C(C+1)K; the triangular solve for the V + K
    right-hand sides, C(C-1)(V+K); the state's three products (into U, into the output, its update),
    6CKV; the chunk's own attention on U, C(C+1)V. Bytes: every input once, the output once.

    Backward, as the moe and mla families count a matmul's: twice each product (the gradients of both
    its operands; fla's backward recomputes the WY form and the states besides, not counted as useful
    work), so 3x the forward's FLOPs; bytes 3x (inputs and output read again with the output's
    gradient, every input's gradient written)."""
    config = problem.config
    c, k_dim, v_dim = reference_linear.CHUNK, config.k_dim, config.v_dim
    batch, tokens = problem.v.shape[:2]
    if problem.state is not None:  # S k, the decayed state plus the rank-one write, S q: 6KV a head
        flops = batch * config.n_v_heads * 6 * k_dim * v_dim
        read = sum(x.numel() * x.element_size() for x in problem.inputs().values())
        return flops, read + problem.v.numel() * problem.v.element_size() + problem.state.numel() * 4
    chunks = -(-tokens // c)
    per_chunk = (c * (c - 1) * k_dim + c * (c + 1) * k_dim + c * (c - 1) * (v_dim + k_dim) + 6 * c * k_dim * v_dim
                 + c * (c + 1) * v_dim)
    flops = batch * config.n_v_heads * chunks * per_chunk
    nbytes = sum(x.numel() * x.element_size() for x in problem.inputs().values()) + problem.v.numel() * problem.v.element_size()
    return (3 * flops, 3 * nbytes) if backward else (flops, nbytes)


FAMILY = Family(
    name="linear",
    variants=VARIANTS,
    implementations=IMPLEMENTATIONS,
    shapes=LINEAR_SHAPES,
    baseline_implementation="fla",
    make_problem=make_problem,
    check_views=check_views,
    work=work,
)
