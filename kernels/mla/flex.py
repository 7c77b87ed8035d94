"""FlexAttention for MLA, in each phase's form (kernels/mla/sdpa.py builds both): decompressed at
prefill under a causal block mask, absorbed at decode (one 576-wide key head for every query head,
the latent as values; a block mask only where several new tokens need the causal one). Compiled on
CUDA as kernels/attention/flex.py does, eager on the CPU. Where the compiler refuses a form (the
absorbed one's keys are 576 wide), the case is a skip with its reason."""

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from kernels.attention.flex import compiled_flex
from kernels.mla.sdpa import absorb, decompress
from variantbench.cases import first_line
from variantbench.catalog import Unsupported


def prepare(variant, problem):
    prefill = problem.q_len == problem.kv_len
    offset = problem.kv_len - problem.q_len
    block_mask = None
    if problem.q_len > 1:
        def causal(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx + offset

        block_mask = create_block_mask(causal, None, None, problem.q_len, problem.kv_len, device=problem.device)
    flex = compiled_flex if problem.device.type == "cuda" else flex_attention

    def call():
        if prefill:
            return flex(*decompress(problem), block_mask=block_mask, scale=problem.scale)
        out_latent = flex(*absorb(problem), block_mask=block_mask, scale=problem.scale, enable_gqa=True)
        return torch.einsum("bhqr,hdr->bhqd", out_latent, problem.w_uv)

    try:
        call()
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, AssertionError) as refused:  # the compiler's limits on head dims
        raise Unsupported(f"FlexAttention refuses the {'decompressed' if prefill else 'absorbed'} form: "
                          f"{type(refused).__name__}: {first_line(refused)}") from None
    return call
