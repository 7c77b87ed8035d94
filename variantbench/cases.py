"""A case is one (family, variant, implementation, shape) on one device: resolve, check, measure.

The suite and the CLI both go through here, so `variantbench check` and the asv benchmarks agree on
what runs, what is skipped and why, and what counts as correct.
"""

import os
from dataclasses import dataclass

from variantbench.catalog import Unsupported, family, field, field_names, replaced
from variantbench.shapes import in_tier

CHECK_SEED_OFFSET = 1_000_003  # check inputs are drawn from a different seed than timed inputs
CHECK_ROWS = 128  # query rows compared against the float64 reference at each check
TOLERANCE_FACTOR = 4  # x the low-precision reference's own error (STYLE 4: tolerance from the data)
# Gradients sum over query tiles in another order than the eager reference: SDPA's CPU flash backward
# measured 4.8x the float32 eager error on dk (attention full, tiny-s128).
GRADIENT_TOLERANCE_FACTOR = 8
SEED = 0


class Mismatch(AssertionError):
    """An implementation disagrees with its reference beyond the data-derived tolerance."""


class StructureDiffers(RuntimeError):
    """A problem's integer inputs (document starts) differ between the check and timing seeds: a call that read
    them when prepared would time other work (session 34's documents, catalog.attention.DOCUMENT_STRUCTURE_SEED).
    A structure made from floating inputs is the problem's to keep (AttentionProblem.blocks): not compared here."""


class UnsupportedWhenPrepared(Unsupported, NotImplementedError):
    """An implementation's prepare found it cannot run the case (torch.compile's compiler failing on
    the graph): only trying says so. An Unsupported, so `check` prints it as a skip like those
    `resolve` finds; a NotImplementedError, asv's skip, so every suite setup that prepares a case
    (through `prepare_checked`) skips it with the reason, as `resolve_or_skip` does the others."""


@dataclass(frozen=True)
class Case:
    family: str
    variant: object
    implementation: object
    shape: object
    device: str

    @property
    def dtype(self):
        import torch

        # bf16 is what models run on GPUs; the CPU run and tests use float32 (CPU bf16 matmuls are
        # slow emulation and the Triton interpreter computes in numpy).
        return torch.bfloat16 if self.device == "cuda" else torch.float32

    @property
    def name(self):
        return case_name(self.family, self.variant.name, self.implementation.name, self.shape.name)


def case_name(family_name, variant_name, implementation_name, shape_name) -> str:
    """A case's name, as runs, memos and choices records key it: family/variant/implementation/shape."""
    return f"{family_name}/{variant_name}/{implementation_name}/{shape_name}"


def resolve(family_name, variant_name, implementation_name, shape_name, device) -> Case:
    """The case, or Unsupported saying why it cannot run here. Pure Python: no GPU work."""
    fam = family(family_name)
    variant = fam.variant(variant_name)
    implementation = fam.implementation(implementation_name)
    shape = fam.shape(shape_name)
    if shape.device != device:
        raise Unsupported(f"shape {shape.name} belongs to the {shape.device} grid, not {device}")
    reason = variant.unsupported(shape)
    if reason:
        raise Unsupported(f"{variant.name} does not fit {shape.name}: {reason}")
    reason = implementation.unsupported(variant, shape)
    if reason:
        raise Unsupported(f"{implementation.name} cannot run {variant.name} at {shape.name}: {reason}")
    if implementation.needs_triton and device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise Unsupported("Triton kernels run on CUDA, or on the CPU under TRITON_INTERPRET=1")
    return Case(fam.name, variant, implementation, shape, device)


def iter_cases(family_name, device, *, variants=None, implementations=None, shapes=None, tier="full"):
    """Every (case or Unsupported) of a family's grid on this device, in catalog order."""
    fam = family(family_name)
    for shape in fam.shapes:
        if shape.device != device or not in_tier(shape, tier) or (shapes and shape.name not in shapes):
            continue
        for variant in fam.variants:
            if variants and variant.name not in variants:
                continue
            if not variants and not in_tier(variant, tier):  # named, it runs at any tier
                continue
            for impl in fam.implementations:
                if implementations and impl.name not in implementations:
                    continue
                if not implementations and not in_tier(impl, tier):  # named, it runs at any tier
                    continue
                try:
                    yield resolve(fam.name, variant.name, impl.name, shape.name, device)
                except Unsupported as why:
                    yield (fam.name, variant.name, impl.name, shape.name, why)


def first_line(error):
    lines = str(error).splitlines()
    return lines[0] if lines else "(no message)"


def _torch_device(case):
    from variantbench.device import require

    return require(case.device)


def prepare_checked(case, *, requires_grad=False):
    """(problem, call, check) for a case: the implementation is prepared (compiled, autotuned) and
    checked against the reference on fresh random inputs, then the inputs are refilled in place with
    the timing seed's values, so the timed call runs on other data than the checked one.
    Raises Mismatch if the implementation is wrong."""
    import torch

    dev = _torch_device(case)
    fam = family(case.family)
    problem = fam.make_problem(
        case.variant, case.shape, device=dev, dtype=case.dtype, seed=SEED + CHECK_SEED_OFFSET,
        requires_grad=requires_grad,
    )
    # Grad mode stays as the timed call will see it: compiled Flex guards on it, and a change would
    # recompile inside the timed region.
    call = _prepared(case, problem)
    out = call()  # a tensor, or a tuple of them (a decode step's output and new state)
    out = tuple(t.detach() for t in out) if isinstance(out, tuple) else out.detach()
    with torch.no_grad():
        result = check_output(case, problem, out)
    result["backend"] = getattr(call, "backend", None)  # which kernel or SDPA backend `prepare` picked, if it says
    if not result["ok"]:
        raise Mismatch(
            f"{case.name}: max error {result['max_error']:.3g} against the float64 reference exceeds the "
            f"tolerance {result['tolerance']:.3g} (low-precision reference error {result['reference_error']:.3g}, "
            f"{result['rows']} rows compared, seed {problem.seed})"
        )
    if requires_grad:
        stand_in = fam.gradient_check_shape(case.variant, case.shape)
        if stand_in is None:
            compared = check_gradients(case, problem, call)
        else:  # the same code at a shape whose float64 check fits, prepared the same way
            result["gradients_at"] = stand_in[1]
            small = fam.make_problem(case.variant, stand_in[0], device=dev, dtype=case.dtype,
                                     seed=SEED + CHECK_SEED_OFFSET, requires_grad=True)
            compared = check_gradients(case, small, _prepared(case, small))
            del small  # before the timed problem's refill below: DeepSeek-V3's layer is 22 GB a copy
        for name, grad in compared.items():
            result[f"max_error_d{name}"] = grad["max_error"]
            if not grad["ok"]:
                raise Mismatch(
                    f"{case.name}: gradient d{name} max error {grad['max_error']:.3g} against the float64 "
                    f"reference exceeds the tolerance {grad['tolerance']:.3g} (low-precision reference error "
                    f"{grad['reference_error']:.3g}, {result['rows']} output rows, seed {problem.seed}"
                    f"{'; ' + stand_in[1] if stand_in else ''})"
                )
    timed_inputs = fam.make_problem(case.variant, case.shape, device=dev, dtype=case.dtype, seed=SEED).inputs()
    if differs := [name for name, t in problem.inputs().items()
                   if not t.is_floating_point() and not torch.equal(t, timed_inputs[name])]:
        raise StructureDiffers(f"{case.name}: input {', '.join(differs)} differs between the check and timing seeds; "
                               f"a problem's structure must come from its shape, its values from the seed")
    with torch.no_grad():
        for name, tensor in problem.inputs().items():
            tensor.copy_(timed_inputs[name])
    problem.seed = SEED
    return problem, call, result


def _prepared(case, problem):
    """The implementation's call on this problem; a refusal found only here says which case."""
    try:
        return case.implementation.load().prepare(case.variant, problem)
    except Unsupported as why:
        raise UnsupportedWhenPrepared(
            f"{case.implementation.name} cannot run {case.variant.name} at {case.shape.name}: {why}") from None


def check_output(case, problem, out):
    """Compare `out` with the family's reference on the rows its `check_views` picks (sampled query
    rows for attention, all tokens for MoE).

    Tolerance from the data: TOLERANCE_FACTOR x the error of the reference run in the working dtype
    against the same reference in float64, plus a rounding band of 2 ulps of the output's magnitude.
    """
    import torch

    reference, got, rows = family(case.family).check_views(case.variant, problem, out, CHECK_ROWS)
    exact = reference(torch.float64)
    low = reference(got.dtype).double()
    band = 2 * torch.finfo(got.dtype).eps * exact.abs().max().item()
    got = got.double()
    reference_error = (low - exact).abs().max().item()
    tolerance = TOLERANCE_FACTOR * reference_error + band
    finite = bool(torch.isfinite(got).all())
    max_error = (got - exact).abs().max().item() if finite else float("inf")
    return {
        "ok": finite and max_error <= tolerance,
        "max_error": max_error,
        "tolerance": tolerance,
        "reference_error": reference_error,
        "rows": rows,
    }


def backward_unsupported(case) -> str | None:
    """Why the case has no forward+backward to time and check, or None where it has one."""
    impl = case.implementation
    if not impl.backward:
        return f"{impl.name} is forward-only"
    if case.device == "cpu" and not impl.backward_on_cpu:
        return f"{impl.name} has no backward on the CPU"
    if getattr(case.shape, "phase", None) == "decode":
        return "decode is inference: no backward"
    return impl.backward_unsupported(case.variant, case.shape)


def check_gradients(case, problem, call) -> dict:
    """{input name: comparison} of the gradients of the sampled output rows (`check_views`) under a
    seeded random output gradient, against the same through the reference in float64; tolerance as
    `check_output`'s (with GRADIENT_TOLERANCE_FACTOR), from the reference's own error in the working dtype. Only the sampled rows
    carry gradient, so the reference stays B x H x rows x Skv at every shape, and the key and value
    gradients are still complete: they sum over exactly those rows."""
    import torch

    fam = family(case.family)
    names = field_names(problem, problem.grad_inputs())
    out = call()
    _, got_rows, _ = fam.check_views(case.variant, problem, out, CHECK_ROWS)
    gen = torch.Generator(out.device).manual_seed(problem.seed + 11)
    out_grad = torch.randn(got_rows.shape, generator=gen, device=out.device, dtype=torch.float32)
    # An input the call's graph never reached (a router detached) gets zeros: a mismatch, named, not a crash.
    got = torch.autograd.grad((got_rows.float() * out_grad).sum(), [field(problem, n) for n in names],
                              allow_unused=True, materialize_grads=True)

    def reference_grads(dtype):
        shadow = replaced(problem, {n: field(problem, n).detach().to(dtype).requires_grad_() for n in names})
        reference, _, _ = fam.check_views(case.variant, shadow, out.detach(), CHECK_ROWS)
        rows = reference(dtype)
        return torch.autograd.grad((rows * out_grad.to(dtype)).sum(), [field(shadow, n) for n in names])

    exact, low = reference_grads(torch.float64), reference_grads(got[0].dtype)
    compared = {}
    for name, g, e, lo in zip(names, got, exact, low):
        reference_error = (lo.double() - e).abs().max().item()
        tolerance = GRADIENT_TOLERANCE_FACTOR * reference_error + 2 * torch.finfo(g.dtype).eps * e.abs().max().item()
        finite = bool(torch.isfinite(g).all())
        max_error = (g.double() - e).abs().max().item() if finite else float("inf")
        compared[name] = {"ok": finite and max_error <= tolerance, "max_error": max_error,
                          "tolerance": tolerance, "reference_error": reference_error}
    return compared


def forward_backward(problem, call):
    """A call running forward then backward with a fixed random output gradient (no accumulation)."""
    import torch

    out = call()
    gen = torch.Generator(out.device).manual_seed(SEED + 7)
    grad = torch.randn(out.shape, generator=gen, device=out.device, dtype=torch.float32).to(out.dtype)
    inputs = problem.grad_inputs()

    def step():
        return torch.autograd.grad(call(), inputs, grad)

    step()  # compiles the backward (Flex) outside any timed region
    return step

