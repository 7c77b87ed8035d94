"""Which attention variants each implementation runs at a shape, and why not where it does not: the
catalog's `unsupported` and `backward_unsupported` hooks (variantbench/catalog/attention.py's
IMPLEMENTATIONS), each reason one line a user reads in `list`, `check` and asv's skips."""

from variantbench.catalog.block_selection import SELECTION_BLOCK

# The reference materialises (B, H, Sq, Skv) float32 scores and two more tensors that size for softmax;
# over 8 GiB of scores it would need about 24 GiB and tens of ms a call, so it is not run (not timed,
# no speedup figure) at such shapes. Correctness there is still checked against it on sampled query
# rows, which need only (B, H, rows, Skv).
REFERENCE_MAX_SCORE_BYTES = 8 * 2**30


def sdpa_score_unsupported(variant):
    if variant.softcap is not None or variant.alibi or variant.score is not None:
        return "SDPA takes no score function; a dense additive bias would need B x H x Sq x Skv memory"
    return None


def sdpa_unsupported(variant, shape):
    if why := sdpa_score_unsupported(variant):
        return why
    if variant.topk_blocks is not None:
        return "a selection per KV head would be a dense B x H x Sq x Skv mask; SDPA takes no block-sparse one"
    if variant.topk_tokens is not None:
        return "SDPA runs a token selection only over gathered keys: implementation sdpa_gathered (full tier)"
    return None


def sdpa_gathered_unsupported(variant, shape):
    if variant.topk_tokens is None:
        return "SDPA over gathered keys runs token selections; sdpa runs the rest"
    if why := sdpa_score_unsupported(variant):
        return why
    if variant.window or variant.prefix or variant.documents or variant.mask:
        return "SDPA over gathered keys runs the token selection alone"
    return None


def triton_unsupported(variant, shape):
    # Our kernel reads the fields: one key interval per query and its score switches. A plug-in's own
    # function is neither (a sink window, keys 0-3 and a causal window, is two intervals).
    own = [f"{kind} function {fn.__name__}" for kind, fn in (("mask", variant.mask), ("score", variant.score)) if fn]
    if own:
        return (f"our kernel runs masks that are one key interval per query (causal, window, prefix, documents) and "
                f"the softcap and alibi scores; {variant.name} has its own {' and '.join(own)}")
    if variant.topk_blocks is not None and (not variant.causal or variant.window or variant.prefix or variant.documents):
        return "our block-sparse kernel runs a causal selection, with no window, prefix or documents beside it"
    if variant.topk_tokens is not None and (variant.window or variant.prefix or variant.documents
                                            or variant.softcap is not None or variant.alibi):
        return "our token-sparse kernel runs the selection alone, with no other mask or score beside it"
    return None


def sdpa_gathered_backward_unsupported(variant, shape):
    # autograd keeps every chunk's gathered keys and values: at llama-3-8b-s4k with 2048 keys a query,
    # 4 x 8 x 4096 x 2048 x 128 x 2 bytes twice, 137 GB (cad5169 ran out of an H200's 140 GiB)
    return "SDPA over gathered keys keeps every query's gathered keys and values for its backward"


def triton_backward_unsupported(variant, shape):
    # a token selection trains through the masked kernels at any share (triton_token_sparse.trainable)
    if variant.topk_blocks is not None:
        return "our block-sparse kernel is forward-only"
    return None


def flex_unsupported(variant, shape):
    if variant.topk_blocks is not None and (shape.kv_len - shape.q_len) % SELECTION_BLOCK:
        return (f"Flex counts query blocks from query 0: {shape.q_len} queries at position "
                f"{shape.kv_len - shape.q_len} do not start a {SELECTION_BLOCK}-key block of the selection")
    return None


def reference_unsupported(variant, shape):
    score_bytes = shape.batch * shape.config.n_heads * shape.q_len * shape.kv_len * 4
    if score_bytes > REFERENCE_MAX_SCORE_BYTES:
        return (
            f"the reference materialises {score_bytes / 2**30:.0f} GiB of float32 scores here, over its "
            f"{REFERENCE_MAX_SCORE_BYTES / 2**30:.0f} GiB limit (checked on sampled rows instead)"
        )
    return None


def compiled_unsupported(variant, shape):
    # Inductor computes the reference's scores with one batched matmul and softmaxes them in place: it
    # does not fuse them away (kernels/attention/compiled.py), so it runs where the reference runs.
    why = reference_unsupported(variant, shape)
    if why:
        return f"torch.compile of the reference keeps its scores in memory: {why}"
    return None
