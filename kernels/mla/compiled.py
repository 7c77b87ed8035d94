"""compiled: torch.compile of the MLA reference in its phase's form (reference/mla.py), as
kernels/attention/compiled.py does for attention: what the compiler alone makes of the layer."""

from kernels.attention.compiled import compile_reference
from reference import mla


def prepare(variant, problem):
    return compile_reference(mla.form(problem), problem.q_nope, problem.q_pe, problem.cache, problem.w_uk,
                             problem.w_uv, scale=problem.scale, dynamic=False)
