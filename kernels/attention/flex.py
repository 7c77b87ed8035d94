"""FlexAttention, compiled, built from the variant's own mask and score functions.

On CUDA `prepare` compiles flex_attention and the block mask (the first call, which compiles, happens
here, never in a timed region). On the CPU it runs flex_attention eagerly: the same functions, through
torch's unfused path, so the tests check the math without a C++ toolchain's compile time.
"""

import time

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from variantbench.catalog import Unsupported
from variantbench.catalog.block_selection import SELECTION_BLOCK

# Every variant and shape is its own graph: `variantbench check` compiles ~50 in one process. Past
# dynamo's default limit of 8 it would fall back to the unfused eager path and time that silently;
# raise the limit, and make hitting it an error rather than a quiet change of implementation.
torch._dynamo.config.recompile_limit = 256
torch._dynamo.config.fail_on_recompile_limit_hit = True
compiled_flex = torch.compile(flex_attention, dynamic=False)


# A selection's BlockMask has 64-row query blocks and 64-key blocks; inductor's tiles must divide
# them. The forward takes its tile from kernel_options (its default Hopper tile is 128 rows, which
# raises). The backward filters its configs by their own tiles before any option applies, and the
# one default for head dim 128 on Hopper has 128-key tiles: no kernel at all (NoValidChoicesError
# on the H200, torch 2.11). Max-autotune's backward list has 32 and 64 tiles, so a selection variant
# compiles in that mode (slower to compile, never in a timed region).
SELECTION_TILES = {"BLOCK_M": SELECTION_BLOCK, "BLOCK_N": SELECTION_BLOCK}
compiled_flex_autotuned = torch.compile(flex_attention, dynamic=False, mode="max-autotune-no-cudagraphs")


def selection_block_mask(variant, problem):
    """A block-sparse top-k variant's BlockMask, straight from its selection (no mask evaluated per
    pair to build it): the selected earlier blocks full, the query block's own partial. Its mask_mod is
    the variant's whole mask all the same: the fused kernel calls it on the partial block only, but
    Flex's unfused path (the CPU's) applies it to every score and ignores the blocks. Flex counts
    query blocks from query 0, so the queries must start at a block boundary."""
    batch, n_q_heads, q_len, _ = problem.q.shape
    kv_len, offset = problem.kv_len, problem.kv_len - problem.q_len
    if offset % SELECTION_BLOCK:
        raise Unsupported(f"Flex's query blocks start at query 0: {q_len} queries at position {offset} do not "
                          f"start a {SELECTION_BLOCK}-key block")
    group = n_q_heads // problem.k.shape[1]
    selection = variant.block_selection(problem)[:, :, offset // SELECTION_BLOCK:].repeat_interleave(group, 1)
    # every key block, the selected ones first (ascending), as create_block_mask orders its indices
    order = torch.sort((~selection).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    n_query_blocks, n_key_blocks = selection.shape[2:]
    # the own (diagonal) block first, then every other key block: a permutation, as `order` is
    own = torch.arange(n_query_blocks, device=selection.device) + offset // SELECTION_BLOCK
    others = torch.arange(n_key_blocks, device=selection.device)[None, :] != own[:, None]
    own = torch.sort(others.to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    own = own.expand(batch, n_q_heads, -1, -1)
    return BlockMask.from_kv_blocks(
        torch.ones(batch, n_q_heads, n_query_blocks, dtype=torch.int32, device=selection.device), own.contiguous(),
        selection.sum(-1, dtype=torch.int32), order, BLOCK_SIZE=SELECTION_BLOCK, mask_mod=variant.mask_mod(problem),
        seq_lengths=(q_len, kv_len))


def prepare_function(variant, problem):
    """Flex, compiled (on CUDA) for the problem's shapes, as a function of any q, k, v of them (a
    block's projections); the block mask is built here, from the problem."""
    q, k = problem.q, problem.k
    mask_mod, score_mod = variant.mask_mod(problem), variant.score_mod(problem)
    block_mask, built = None, ""
    if variant.topk_blocks is not None:
        started = time.perf_counter()
        block_mask = selection_block_mask(variant, problem)
        if q.is_cuda:
            torch.cuda.synchronize(q.device)
        built = f"BlockMask from the selection in {1e3 * (time.perf_counter() - started):.1f} ms"
    elif mask_mod is not None:
        # The document mask and a token selection depend on the batch row; the others do not.
        batch = problem.batch if variant.documents or variant.topk_tokens is not None else None
        block_mask = create_block_mask(mask_mod, batch, None, problem.q_len, problem.kv_len, device=q.device)
    selection = variant.topk_blocks is not None
    flex = flex_attention if not q.is_cuda else compiled_flex_autotuned if selection else compiled_flex
    options = SELECTION_TILES if selection else None
    gqa = q.shape[1] != k.shape[1]

    def attend(q, k, v):
        return flex(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa, kernel_options=options)

    attend.backend = f"flex ({built})" if built else "flex"
    return attend


def prepare(variant, problem):
    attend = prepare_function(variant, problem)

    def call():
        return attend(problem.q, problem.k, problem.v)

    call()
    if attend.backend != "flex":
        call.backend = attend.backend
    return call
