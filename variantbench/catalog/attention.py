"""The attention family: variants, implementations, baseline, shapes and work model.

A variant is one small dataclass entry; its math is the mask and score functions built from its
fields, in attention-gym's four-argument form `mask(b, h, q_idx, kv_idx) -> bool` and
`score(score, b, h, q_idx, kv_idx) -> score`, named after the variant. The reference and FlexAttention
evaluate those functions; SDPA gets the dense mask they define; our Triton kernel reads the same fields.

Positions: a problem's queries are the last q_len of its kv_len positions, so query index i sits at
key position i + offset, offset = kv_len - q_len (0 at prefill, kv_len - 1 at decode).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from variantbench.catalog import Family, Implementation, Unsupported, check_numbers_in_name, sample_rows
from variantbench.catalog import attention_support as support
from variantbench.catalog.attention_mods import (alibi_score, and_masks, causal_mask, mask_at_positions, or_masks,
                                                 prefix_mask, same_document_mask, score_at_positions,
                                                 sliding_window_mask, softcap_score)
from variantbench.catalog.block_selection import (block_selection, selected_blocks, selected_pairs,
                                                   selection_mask)
from variantbench.catalog.token_selection import selected_token_pairs, token_mask, token_selection
from variantbench.shapes import ATTENTION_SHAPES, AttentionShape



NUMBERED_NAME_PARTS = {"window": "window", "gqa": "kv_heads", "softcap": "softcap", "prefix": "prefix",
                       "prefix_lm": "prefix", "block_topk": "topk_blocks", "dsa_topk": "topk_tokens"}


@dataclass(frozen=True)
class AttentionVariant:
    name: str
    causal: bool = True
    kv_heads: int | str = "model"  # "model": the model's own KV heads; "mha": one per query head
    window: int | None = None  # keys a query sees, itself included (see sliding_window_mask)
    prefix: int | None = None  # bidirectional prefix length, prefix-LM
    documents: bool = False  # packed sequences with seeded random lengths; causal within each
    softcap: float | None = None  # scores capped to (-softcap, softcap) by tanh
    alibi: bool = False
    # Block-sparse top-k (variantbench.catalog.block_selection): each query block reads its own block and
    # the topk_blocks earlier key blocks its pooled queries score highest, chosen per KV head.
    topk_blocks: int | None = None
    # Token-level top-k (variantbench.catalog.token_selection, DSA): each query reads the topk_tokens
    # causal keys a seeded indexer scores highest.
    topk_tokens: int | None = None
    baseline: bool = False
    note: str = ""
    tier: str = "quick"  # the lowest tier whose runs include it unless named (variantbench.shapes.TIERS)
    # A plug-in's own math on positions (see mask_at_positions): mask(b, h, q_pos, kv_pos) AND-ed with
    # the fields' mask, score(score, b, h, q_pos, kv_pos) after their score functions. SDPA and Flex
    # build one mask for every head and batch row: a mask must depend on positions only.
    mask: Callable | None = None
    score: Callable | None = None

    def __post_init__(self):
        check_numbers_in_name(self, NUMBERED_NAME_PARTS)
        if self.topk_tokens is not None and self.topk_tokens < 1:
            raise ValueError(f"AttentionVariant {self.name!r}: a query reads at least one key, not {self.topk_tokens}")

    def n_kv_heads(self, shape: AttentionShape) -> int:
        config = shape.config
        if self.kv_heads == "model":
            return config.n_kv_heads
        if self.kv_heads == "mha":
            return config.n_heads
        if config.n_heads % self.kv_heads:
            raise Unsupported(f"{self.name}: {config.n_heads} query heads do not split into {self.kv_heads} KV heads")
        return self.kv_heads

    def unsupported(self, shape: AttentionShape) -> str | None:
        try:
            self.n_kv_heads(shape)
        except Unsupported as why:
            return str(why)
        return None

    def mask_mod(self, problem):
        """The mask function, or None for full (unmasked) attention."""
        offset = problem.kv_len - problem.q_len
        masks = []
        if self.causal:
            masks.append(or_masks(causal_mask(offset), prefix_mask(self.prefix)) if self.prefix else causal_mask(offset))
        if self.window is not None:
            masks.append(sliding_window_mask(self.window, offset))
        if self.documents:
            masks.append(same_document_mask(problem.doc_start, offset))
        if self.topk_blocks is not None:
            group = problem.n_heads // problem.k.shape[1]
            masks.append(selection_mask(self.block_selection(problem), offset, group))
        if self.topk_tokens is not None:
            masks.append(token_mask(problem.selection, offset))
        if self.mask is not None:
            masks.append(mask_at_positions(self.mask, offset))
        if not masks:
            return None
        mask = masks[0] if len(masks) == 1 else and_masks(*masks)
        mask.__name__ = self.name
        return mask

    def score_mod(self, problem):
        """The score function, or None: applied to the scaled score q.k / sqrt(D) before masking.
        Soft-capping comes before the ALiBi bias where a variant has both, as in our Triton kernel."""
        mods = []
        if self.softcap is not None:
            mods.append(softcap_score(self.softcap))
        if self.alibi:
            mods.append(alibi_score(problem.n_heads, problem.kv_len - problem.q_len, problem.q.device))
        if self.score is not None:
            mods.append(score_at_positions(self.score, problem.kv_len - problem.q_len))
        if not mods:
            return None

        def score(s, b, h, q_idx, kv_idx):
            for mod in mods:
                s = mod(s, b, h, q_idx, kv_idx)
            return s

        score.__name__ = self.name
        return score

    def block_selection(self, problem):
        """(B, Hkv, n, n) bool: the earlier key blocks each query block reads (block_selection.py): the problem's
        own, chosen from its q and k when it was drawn (make_problem), or from them now where it holds none."""
        if problem.blocks is not None:
            return problem.blocks
        return block_selection(problem.q, problem.k, self.topk_blocks)

    def selected_blocks(self, problem):
        """(indices, counts) of `block_selection`, as a kernel reads them (block_selection.selected_blocks)."""
        return selected_blocks(self.block_selection(problem))

    def key_bounds(self, problem):
        """(lo, hi), each (B, Sq): query i sees keys lo <= k <= hi. Every variant made of the fields
        is such an interval; the work model counts visible pairs from it, and the tests check it
        against the mask function on dense grids. A plug-in's own mask function need not be one."""
        if self.mask is not None:
            raise ValueError(f"{self.name}: its own mask function {self.mask.__name__} is not known to be one key "
                             "interval per query")
        if self.topk_blocks is not None or self.topk_tokens is not None:
            raise ValueError(f"{self.name}: a selection is several key intervals per query")
        batch, q_len, kv_len = problem.batch, problem.q_len, problem.kv_len
        pos = torch.arange(kv_len - q_len, kv_len, device=problem.q.device).expand(batch, q_len)
        lo = torch.zeros_like(pos)
        hi = pos.clone() if self.causal else torch.full_like(pos, kv_len - 1)
        if self.prefix:
            hi = hi.clamp(min=self.prefix - 1)
        if self.window is not None:
            lo = torch.maximum(lo, pos - self.window + 1)
        if self.documents:
            lo = torch.maximum(lo, problem.doc_start.gather(1, pos).long())
        return lo, hi.clamp(max=kv_len - 1)


VARIANTS = (
    # MHA and MQA are nightly (full tier): our kernel and SDPA's run them as gqa_8's with 32 and 1 KV
    # heads. mqa's four timed cases were ~26 s of 0318851's default tier (599 s of its 600 on an H200,
    # session 13); causal's four (each prepared and checked in 6-10 s) left when 3311c6e's tier, decode
    # steps graphed, took 615 s (session 14, beside another lane on the same host).
    AttentionVariant("causal", kv_heads="mha", note="multi-head: one KV head per query head", tier="full"),
    AttentionVariant("gqa_8", kv_heads=8, baseline=True, note="8 KV heads, the established Llama-3 recipe"),
    AttentionVariant("mqa", kv_heads=1, note="one KV head shared by all query heads", tier="full"),
    AttentionVariant("sliding_window_1024", window=1024, note="each query sees 1024 keys, itself included"),
    AttentionVariant("document", documents=True, note="packed sequences, seeded lengths in [S/16, S/2]"),
    AttentionVariant("softcap_50", softcap=50.0, note="Gemma-2 style tanh capping of scores at 50"),
    AttentionVariant("alibi", alibi=True, note="ALiBi linear position bias, causal"),
    AttentionVariant("prefix_lm", prefix=1024, note="first 1024 positions bidirectional, causal after"),
    # Nightly with them: 75ceccd's default tier took 643 s alone on an H200 (session 15); full's four
    # timed cases were ~33 s of it. The ViT block runs bidirectional attention in the full tier too.
    AttentionVariant("full", causal=False, note="no mask: bidirectional encoder attention", tier="full"),
    AttentionVariant("block_topk_16", topk_blocks=16,
                     note="NSA/MoBA selection: own 64-key block + the 16 earlier ones its pooled queries pick"),
    # Not in the quick tier: through the Triton interpreter its token gather made it 119 s of the CPU
    # quick run's 347 (2 cores, session 13); every other tiny case took under 30 s.
    AttentionVariant("dsa_topk_2048", topk_tokens=2048, tier="default",
                     note="DeepSeek-V3.2 sparse attention: the 2048 causal keys a seeded indexer ranks first"),
)


IMPLEMENTATIONS = (
    Implementation("reference", "reference.attention", fused=False, backward=True,
                   unsupported=support.reference_unsupported),
    Implementation("sdpa", "kernels.attention.sdpa", fused=True, backward=True, unsupported=support.sdpa_unsupported),
    # torch 2.13's FlexAttention raises NotImplementedError for a backward on the CPU. A peer, so nightly
    # (full tier): its compile costs every asv process 13-15 s, and its 11 forwards and 10 backwards with
    # their figures took ~430 s of cad5169's default tier on an H200, which ran past 1000 s in all.
    Implementation("flex", "kernels.attention.flex", fused=True, backward=True, backward_on_cpu=False,
                   unsupported=support.flex_unsupported, tier="full"),
    Implementation("triton", "kernels.attention.triton_attention", fused=True, backward=True, needs_triton=True,
                   autotunes=True, ours=True, unsupported=support.triton_unsupported,
                   backward_unsupported=support.triton_backward_unsupported),
    # torch.compile of the reference; its backward is autograd through the compiled graph.
    Implementation("compiled", "kernels.attention.compiled", fused=True, backward=True,
                   unsupported=support.compiled_unsupported, tier="full"),
    # Nightly: 401 ms a call at llama-3-8b-s4k on an H200, 31x our token-sparse kernel (ec6ebbf).
    Implementation("sdpa_gathered", "kernels.attention.sdpa_gathered", fused=True, backward=True, tier="full",
                   unsupported=support.sdpa_gathered_unsupported,
                   backward_unsupported=support.sdpa_gathered_backward_unsupported),
)

@dataclass
class AttentionProblem:
    """Inputs for one call. q: (B, Hq, Sq, D); k, v: (B, Hkv, Skv, D); doc_start: (B, Skv) int32 or None."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    doc_start: torch.Tensor | None
    seed: int
    selection: torch.Tensor | None = None  # (B, Sq, Skv) bool: a token-level top-k's keys
    blocks: torch.Tensor | None = None  # (B, Hkv, n, n) bool: a block top-k's selection (variant.block_selection)

    @property
    def batch(self):
        return self.q.shape[0]

    @property
    def n_heads(self):
        return self.q.shape[1]

    @property
    def q_len(self):
        return self.q.shape[2]

    @property
    def kv_len(self):
        return self.k.shape[2]

    @property
    def head_dim(self):
        return self.q.shape[3]

    @property
    def device(self):
        return self.q.device

    def inputs(self):
        return {name: t for name, t in (("q", self.q), ("k", self.k), ("v", self.v), ("doc_start", self.doc_start))
                if t is not None}

    def grad_inputs(self):
        return self.q, self.k, self.v


def document_starts(batch, kv_len, seed):
    """(B, Skv) int32: each position's document start. Lengths uniform in [S/16, S/2], drawn per
    sequence from `seed`; the last document is cut at S."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.empty(batch, kv_len, dtype=torch.int32)
    low, high = max(1, kv_len // 16), max(2, kv_len // 2)
    for b in range(batch):
        pos = 0
        while pos < kv_len:
            length = int(torch.randint(low, high + 1, (1,), generator=gen))
            starts[b, pos : pos + length] = pos
            pos += length
    return starts


# The documents come from the shape, not the seed, as MoE's load does (moe.LOAD_STRUCTURE_SEED): the check
# problem (seed SEED + CHECK_SEED_OFFSET) is refilled in place with the timed seed's inputs after it is
# checked (cases.prepare_checked), and a call that had read its documents when prepared then timed other
# documents than its inputs held. At tiny-s128 SDPA's timed output (its dense mask built once) was 3.7 off
# the reference; at llama-3-8b-s4k our Gluon forward's items (listed once) walked 731 key tiles a head in
# 133 items where the timed documents hold 748 in 136 (session 34, counted offline from its item list).
# Seed 0, the timing seed's: the documents the history's useful FLOPs were counted on.
DOCUMENT_STRUCTURE_SEED = 0


def make_problem(variant, shape, *, device, dtype, seed, requires_grad=False):
    """Seeded standard-normal q, k, v (never zeros), and the shape's document boundaries."""
    config = shape.config
    # Drawn on the device itself: a decode cache is 10^9 values, about 10 s to draw on the host.
    gen = torch.Generator(device).manual_seed(seed)

    def randn(*size):
        t = torch.randn(*size, generator=gen, device=device, dtype=torch.float32).to(dtype)
        return t.requires_grad_(requires_grad)

    kv_heads = variant.n_kv_heads(shape)
    q = randn(shape.batch, config.n_heads, shape.q_len, config.head_dim)
    k = randn(shape.batch, kv_heads, shape.kv_len, config.head_dim)
    v = randn(shape.batch, kv_heads, shape.kv_len, config.head_dim)
    doc_start = (document_starts(shape.batch, shape.kv_len, DOCUMENT_STRUCTURE_SEED).to(device)
                 if variant.documents else None)
    selection = blocks = None
    if variant.topk_tokens is not None:
        selection = token_selection(shape.batch, shape.q_len, shape.kv_len, variant.topk_tokens, device=device,
                                    seed=seed)
    # Chosen once, from the q and k drawn here, and kept through prepare_checked's refill (no input): ours and Flex
    # read it when prepared, so the timed call and the reference share it. Chosen again from the refilled q and k,
    # Flex's timed output was 0.17 off the reference at 1280 tokens (session 34, a read-only review).
    if variant.topk_blocks is not None:
        with torch.no_grad():
            blocks = block_selection(q, k, variant.topk_blocks)
    return AttentionProblem(q, k, v, doc_start, seed, selection, blocks)


def visible_pairs(variant, problem) -> int:
    """Query-key pairs the mask lets through, summed over batch (per head). A plug-in's own mask need
    not be one key interval per query: it is evaluated on the index grid, chunks of query rows at a time.
    A block selection's count does not depend on the data (block_selection.selected_pairs)."""
    if variant.topk_blocks is not None:
        return problem.batch * selected_pairs(variant.topk_blocks, problem.q_len, problem.kv_len)
    if variant.topk_tokens is not None:
        return problem.batch * selected_token_pairs(variant.topk_tokens, problem.q_len, problem.kv_len)
    if variant.mask is None:
        lo, hi = variant.key_bounds(problem)
        return int((hi - lo + 1).clamp(min=0).sum())
    mask_mod, device = variant.mask_mod(problem), problem.q.device
    b, h = torch.arange(problem.batch, device=device).view(-1, 1, 1), torch.zeros((), dtype=torch.long, device=device)
    kv = torch.arange(problem.kv_len, device=device).view(1, 1, -1)
    rows = max(1, 2**24 // (problem.batch * problem.kv_len))  # 16 MiB of booleans an evaluation
    pairs = 0
    for start in range(0, problem.q_len, rows):
        q = torch.arange(start, min(start + rows, problem.q_len), device=device).view(1, -1, 1)
        pairs += int(mask_mod(b, h, q, kv).expand(problem.batch, -1, problem.kv_len).sum())
    return pairs


def work(variant, problem, backward=False):
    """(FLOPs, bytes) of one call on useful work only: masked-out scores do not count.

    Forward: QK^T and PV, 2 multiply-adds each per visible pair and head dim: 4 B Hq D pairs FLOPs.
    Backward recomputes QK^T and adds dV, dP, dQ, dK: 2.5x the forward, so fwd+bwd is 3.5x.
    Bytes: each input read once, each output written once (q, k, v, o; plus do, dq, dk, dv backward).
    """
    pairs = visible_pairs(variant, problem)
    flops = 4 * problem.n_heads * problem.head_dim * pairs
    elem = problem.q.element_size()
    q_bytes = problem.q.numel() * elem
    kv_bytes = problem.k.numel() * elem
    nbytes = 2 * q_bytes + 2 * kv_bytes
    if backward:
        flops = flops * 7 // 2
        nbytes += 4 * q_bytes + 4 * kv_bytes
    return flops, nbytes


def head_dim_scale(problem):
    return 1.0 / math.sqrt(problem.head_dim)


def check_views(variant, problem, out, rows):
    """Up to `rows` sampled query rows of the output, and the reference on exactly those rows (it
    needs only B x H x rows x Skv scores, so it checks every shape, even where it cannot run whole)."""
    from reference.attention import attention

    picked = sample_rows(problem.q_len, rows, problem.seed).to(problem.q.device)
    mask_mod, score_mod = variant.mask_mod(problem), variant.score_mod(problem)

    def reference(dtype):
        return attention(
            problem.q[:, :, picked].to(dtype), problem.k.to(dtype), problem.v.to(dtype),
            mask_mod=mask_mod, score_mod=score_mod, q_idx=picked,
        )

    return reference, out[:, :, picked], int(picked.numel())


FAMILY = Family(
    name="attention",
    variants=VARIANTS,
    implementations=IMPLEMENTATIONS,
    shapes=ATTENTION_SHAPES,
    baseline_implementation="sdpa",
    make_problem=make_problem,
    check_views=check_views,
    work=work,
)
