"""compiled: torch.compile of the chunked reference (reference/linear_attention.py), what the compiler
alone makes of Gated DeltaNet. Dynamo unrolls the loop over chunks, so it runs only where that loop is
short (variantbench/catalog/linear.py says where). At decode, of the reference's step."""

from kernels.attention.compiled import compile_reference
from reference.linear_attention import chunked, step


def prepare(variant, problem):
    p = problem
    if p.state is not None:
        return compile_reference(step, p.q, p.k, p.v, p.g, p.beta, p.state, scale=p.scale, dynamic=False)
    return compile_reference(chunked, p.q, p.k, p.v, p.g, p.beta, scale=p.scale, dynamic=False)
