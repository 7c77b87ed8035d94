"""compiled: torch.compile of the reference block (reference/block.py), argument for argument, through
kernels/attention/compiled.py's `compile_reference`: what the compiler alone makes of a recipe,
fullgraph where dynamo captures it whole (an MoE block's routing breaks the graph, as the moe
family's compiled does; the call's `backend` says where)."""

from kernels.attention.compiled import compile_reference
from reference.block import block


def prepare(variant, problem):
    return compile_reference(block, variant, problem.config, problem, problem.x, cache=problem.cache,
                             dynamic=problem.moe is not None)
