"""compiled: torch.compile of the MoE reference, what the compiler alone makes of a router.

`prepare` compiles the `reference` implementation's own call (reference/moe.py's `moe`, argument for
argument) through kernels/attention/compiled.py's `compile_reference`, and calls it once there.

It cannot be one graph: the reference sizes each expert's rows by `torch.bincount(...).tolist()`,
whose values depend on the data, so dynamo compiles the routing, breaks there (the call's `backend`
says so, with the line), and compiles the per-expert loop that follows as a second graph, traced
with each expert's row count. `dynamic=True` makes those counts symbols from the first compile: with
the default, the first graph holds the check's exact counts, and the timed inputs' routing compiled
the loop again (tiny-moe-t64-uniform: after the default, up to 2 recompiles over 20 new routings; after
dynamic=True, none). A routing that empties an expert, or gives it one row, where the compiled one
did not, still recompiles the loop (dynamo specialises counts of 0 and 1; tiny-moe-t64-zipf: 2 of 20
routings, 1-4 s each on 2 CPU cores): the suite's untimed warm-up calls take that, never a sample.
"""

from kernels.attention.compiled import compile_reference
from reference.moe import moe


def prepare(variant, problem):
    return compile_reference(moe, variant.router, problem.config, problem.x, problem.router_weight,
                             problem.selection_bias, problem.w13, problem.w2, problem.shared13, problem.shared2,
                             dynamic=True)
