"""Our attention, the catalog's `triton` implementation: which of our kernels runs a case, and the
catalog's entry points.

The forward has two kernels. gluon_flash.py's is FlashAttention-3's warp-specialised schedule for
Hopper, at cuDNN's speed on causal GQA (session 23, H200, llama-3-8b-s4k: 0.9883 ms against cuDNN's
1.0173, where triton_flash.py's ran 1.1431); it runs 16-bit self-attention at head dim 128 on sm_90, a
length a multiple of 128, every interval mask and score function, in any layout the copy engine reads
(a block's projections too). triton_flash.py's runs everything else: other GPUs and head dims, decode,
cross lengths, other lengths, and the interpreter on the CPU. A prepared call
names the one it runs (`backend`, kept beside the asv results), and `variantbench check` shows it.
The backward (triton_attention_backward.py) is one for both: it recomputes the probabilities from the
forward's lse, which the two keep alike (log2 units).
"""

import torch
import triton

from kernels.attention import triton_flash
from variantbench.catalog import Unsupported

try:
    from kernels.attention import gluon_flash, gluon_walk
except ImportError:  # a Triton without Gluon: the Triton kernel runs every case
    gluon_flash = gluon_walk = None


def gluon_refusal(q, k, v):
    """Why the Gluon forward cannot run q, k, v (the Triton one does), or None."""
    if gluon_flash is None:
        return f"Triton {triton.__version__} has no Gluon"
    return gluon_flash.refusal(q, k, v)


def _kernel(q, k, v, config):
    """The module whose forward runs these: a forced Triton config (a plug-in's tile) keeps Triton's."""
    return triton_flash if config is not None or gluon_refusal(q, k, v) else gluon_flash


def forward_launcher(q, k, v, *, config=None, lse=None, items=None, selection_words=None, **options):
    """A launch of our forward on these tensors (triton_flash.forward_launcher's options and contract),
    through the kernel that runs them; `items`, `document_work`'s, where the Gluon forward runs them. A
    `selection` (DSA's bytes) runs the Triton forward, which reads it, unless its words come beside it
    (`selection_words`, gluon_selection.selection_words) for the Gluon forward, where that runs the tensors: words
    without bytes are refused (the bytes are what the Triton kernels read where the Gluon ones cannot run)."""
    if selection_words is not None and options.get("selection") is None:
        raise ValueError("selection_words come beside a selection's bytes (triton_token_sparse.selection_bytes)")
    if _kernel(q, k, v, config) is gluon_flash and (options.get("selection") is None or selection_words is not None):
        return gluon_flash.forward_launcher(q, k, v, lse=lse, items=items, **(options | {"selection": selection_words}))
    return triton_flash.forward_launcher(q, k, v, config=config, lse=lse, **options)


def attention_forward(
    q, k, v, *, causal, window=None, prefix=None, doc_start=None, softcap=None, alibi=False, scale=None, items=None
):
    """Attention forward, launched once (see `forward_launcher`). Returns (B, Hq, Sq, D)."""
    return forward_launcher(q, k, v, causal=causal, window=window, prefix=prefix, doc_start=doc_start,
                            softcap=softcap, alibi=alibi, scale=scale, items=items)()


def document_work(q, k, v, options):
    """The Gluon forward's document work items (gluon_walk.document_work) for these options (`prepare`'s),
    or None where it would not walk them (another kernel runs q, k, v; no documents; a window or prefix
    beside them): for a caller that launches many times on one doc_start to list them once, as Flex builds
    its block mask once, and own them (they hold doc_start's values when listed: list again after writing
    doc_start). A training step's forward builds a launcher every call, and listing them there cost 321 us
    of the host's time a call (session 30, H200, llama-3-8b-s4k, tools/probe_host_issue.py: the documents'
    forward+backward 2.03 ms a call, 82% of it to issue; 1.91 ms, 68%, listed once)."""
    if gluon_refusal(q, k, v):
        return None
    doc_start, window, prefix = options.get("doc_start"), options.get("window"), options.get("prefix")
    return gluon_walk.document_work(q, doc_start, window, prefix,
                                    gluon_flash.item_positions(q, k, doc_start, window, prefix, options.get("alibi")))


def _backend(q, k, v, config=None):
    """What a call on these names as its kernel."""
    return "gluon forward" if _kernel(q, k, v, config) is gluon_flash else "triton"


def prepare_function(variant, problem):
    """Our kernel as a function of any q, k, v of the problem's shapes (a block's projections): the
    autograd function with our backward where q needs a gradient, the forward alone otherwise. Tuned
    here, on the problem's tensors. The interval variants only: a selection is its problem's own."""
    if variant.topk_blocks is not None or variant.topk_tokens is not None:
        raise Unsupported("our sparse kernels read their problem's own selection; they serve no block")
    from kernels.attention.triton_attention_backward import TritonAttention

    options = dict(causal=variant.causal, window=variant.window, prefix=variant.prefix, doc_start=problem.doc_start,
                   softcap=variant.softcap, alibi=variant.alibi)

    items = document_work(problem.q, problem.k, problem.v, options)

    def attend(q, k, v):
        # named per call: a block hands its own views (a slice of a fused projection may be misaligned)
        attend.backend = _backend(q, k, v)
        if q.requires_grad and torch.is_grad_enabled():
            return TritonAttention.apply(q, k, v, options, items)
        return attention_forward(q, k, v, **options, items=items)

    attend(problem.q, problem.k, problem.v)
    return attend


def prepare(variant, problem, config=None):
    """The catalog's entry point: runs (and on CUDA autotunes, unless a `config` is forced) once,
    returns the launch-only call."""
    if variant.topk_blocks is not None:  # a selection reads several key intervals per query
        from kernels.attention import triton_block_sparse

        return triton_block_sparse.prepare(variant, problem)
    if variant.topk_tokens is not None:
        from kernels.attention import triton_token_sparse

        return triton_token_sparse.prepare(variant, problem)
    q, k, v = problem.q, problem.k, problem.v
    options = dict(
        causal=variant.causal, window=variant.window, prefix=variant.prefix,
        doc_start=problem.doc_start, softcap=variant.softcap, alibi=variant.alibi, config=config,
    )

    if q.requires_grad:  # a forward+backward case: the autograd function with our backward kernels
        from kernels.attention.triton_attention_backward import TritonAttention

        options.pop("config")  # its forward is the tuned one: a forced tile times a forward alone
        items = document_work(q, k, v, options)
        call = lambda: TritonAttention.apply(q, k, v, options, items)  # noqa: E731
        call()
    else:
        first_launch = forward_launcher(q, k, v, **options)
        first_launch()
        call = getattr(first_launch, "then", first_launch)  # on CUDA, the launch without the bookkeeping
    call.backend = _backend(q, k, v, None if q.requires_grad else config)
    return call
