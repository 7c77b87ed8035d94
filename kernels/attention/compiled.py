"""compiled: torch.compile of the reference, what the compiler alone makes of a variant.

`prepare` compiles the `reference` implementation's own call (reference/attention.py's `attention`
with the variant's mask and score functions, argument for argument) with inductor, fullgraph where
dynamo captures it whole, and calls it once, so the compile never lands in a timed region. It tells a
researcher whether the compiler gets a new variant within budget before anyone writes a kernel.
This is the one kernel module that imports the reference: compiling it is the implementation. Its
check against the float64 reference therefore tests the compiler, not the variant's math.

It runs where the reference runs (the catalog gives it the reference's `unsupported`): inductor does
not fuse the scores away. It computes them with one batched matmul into a (B x H, Sq, Skv) buffer and
softmaxes them there (at tiny-s128: one 32 x 128 x 128 float32 buffer; softcap_50 writes its capped
scores to a second); none of its attention patterns matches the reference's masked softmax, float
cast and nan_to_num, so none becomes a fused attention kernel.

`compile_reference` is shared with kernels/moe/compiled.py.
"""

import types
from pathlib import Path

import torch
from torch._dynamo.exc import BackendCompilerFailed

from reference.attention import attention
from variantbench.cases import first_line
from variantbench.catalog import Unsupported

# A function dynamo compiles as a frame of its own keeps one graph per closure and per routing: a
# plug-in mask that breaks the graph is one frame for every case of its variant (each prepare brings
# a new closure), and the MoE loop after its break compiles again for a routing that leaves other
# experts with 0 or 1 rows. Past dynamo's default of 8 graphs per function it would run the rest
# eagerly and time that as `compiled`. As in kernels/attention/flex.py: raise the limit, and make
# hitting it an error rather than a quiet change of implementation.
torch._dynamo.config.recompile_limit = 256
torch._dynamo.config.fail_on_recompile_limit_hit = True


def own_copy(function):
    """`function` with a code object of its own. Dynamo keeps its graphs, and the frames it gave up
    on, on the code object: compiled in place, a second MoE variant's fullgraph compile ran the first
    one's graph-broken code and raised nothing."""
    copy = types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


def _where(error):
    """The compiler's first line, and the line of user code it stopped at where it says."""
    frame = getattr(error, "innermost_user_frame_summary", None)
    if frame is None:
        return first_line(error)
    return f"{first_line(error)} at {'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno} `{frame.line}`"


def _refused(failed: BackendCompilerFailed):
    inner = failed.inner_exception
    return Unsupported(f"torch.compile fails: {type(inner).__name__}: {first_line(inner)}")


def compile_reference(function, *args, dynamic, **kwargs):
    """A call running `function(*args, **kwargs)` through torch.compile, compiled here by one call.

    fullgraph where dynamo captures one graph; else compiled with graph breaks, and the call's
    `backend` (which `variantbench check` prints) says where the first one is. Where the compiler
    itself fails, Unsupported with its reason: `check` prints a skip, the suite skips the case.
    """
    breaks = None
    try:
        compiled = torch.compile(own_copy(function), fullgraph=True, dynamic=dynamic)
        compiled(*args, **kwargs)
    except BackendCompilerFailed as failed:
        raise _refused(failed) from None
    except RuntimeError as graph_break:  # dynamo's graph breaks and data-dependent guards are RuntimeErrors
        breaks = _where(graph_break)
        compiled = torch.compile(own_copy(function), dynamic=dynamic)
        try:
            compiled(*args, **kwargs)
        except BackendCompilerFailed as failed:
            raise _refused(failed) from None

    def call():
        return compiled(*args, **kwargs)

    if breaks:
        call.backend = f"compiled (graph breaks: {breaks})"
    return call


def prepare(variant, problem):
    mask_mod, score_mod = variant.mask_mod(problem), variant.score_mod(problem)
    # Every variant and shape is its own graph, as in kernels/attention/flex.py. With the default,
    # dynamo remembers by function name and line which sizes changed, own copies included: a process's
    # second shape compiled with symbolic sizes, which only cost the kernels their specialisation (a
    # problem's sizes never change).
    return compile_reference(attention, problem.q, problem.k, problem.v, mask_mod=mask_mod, score_mod=score_mod,
                             dynamic=False)
