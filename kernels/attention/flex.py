"""FlexAttention, compiled, built from the variant's own mask and score functions.

On CUDA `prepare` compiles flex_attention and the block mask (the first call, which compiles, happens
here, never in a timed region). On the CPU it runs flex_attention eagerly: the same functions, through
torch's unfused path, so the tests check the math without a C++ toolchain's compile time.
"""

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

# Every variant and shape is its own graph: `variantbench check` compiles ~50 in one process. Past
# dynamo's default limit of 8 it would fall back to the unfused eager path and time that silently;
# raise the limit, and make hitting it an error rather than a quiet change of implementation.
torch._dynamo.config.recompile_limit = 256
torch._dynamo.config.fail_on_recompile_limit_hit = True
compiled_flex = torch.compile(flex_attention, dynamic=False)


def prepare(variant, problem):
    q, k, v = problem.q, problem.k, problem.v
    mask_mod, score_mod = variant.mask_mod(problem), variant.score_mod(problem)
    block_mask = None
    if mask_mod is not None:
        # The document mask depends on the batch row; the others are the same for every row.
        batch = problem.batch if variant.documents else None
        block_mask = create_block_mask(mask_mod, batch, None, problem.q_len, problem.kv_len, device=q.device)
    flex = compiled_flex if q.is_cuda else flex_attention
    gqa = q.shape[1] != k.shape[1]

    def call():
        return flex(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)

    call()
    return call
