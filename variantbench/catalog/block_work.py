"""The block family's work model: the useful FLOPs and bytes of one layer, forward or forward+backward,
each piece counted as its own family counts it (attention's visible pairs, MLA's latent expansion, the
gated delta rule, the MoE's routed tokens), so a block's figures and its pieces' agree."""

import torch

from variantbench.catalog import family
from variantbench.catalog.attention import AttentionProblem, visible_pairs


def work(variant, problem, backward=False):
    """(FLOPs, bytes) of the layer's useful work. FLOPs: the four projections, 2 T dim (H + 2 Hkv + H) D;
    the attention's visible pairs as the attention family counts them; the MLP, 6 T dim ffn gated
    (4 ungated), or the MoE's routed work as the moe family counts it, forward or forward+backward,
    and so latent attention's expansion and pairs (the mla family's work) and the gated delta rule (the
    linear family's).
    Mixture-of-depths counts the chosen tokens, plus its router. Backward: twice each matmul (input and
    weight gradients), the attention's 2.5x. Bytes: every weight once (MLA's up-projections too), tokens in and out, the cache
    read at decode (a Gated DeltaNet layer's convolution state read, its rule's state read and
    written); twice that with a backward."""
    config = problem.config
    batch, tokens, dim = problem.x.shape
    routed = tokens if variant.depth_capacity is None else max(1, int(tokens * variant.depth_capacity))
    kv_len = routed if problem.k_cache is None else problem.k_cache.shape[2]
    heads, kv_heads, head_dim = config.n_heads, config.n_kv_heads, config.head_dim
    rows = batch * routed
    gemm = 2 * rows * dim * (2 * heads + 2 * kv_heads) * head_dim
    m = config.mla_config
    piece_flops = 0  # a latent or linear attention's, forward+backward where trained, as its family counts it
    if m is not None:  # the query's bottleneck, the latent's down projection, the output projection
        gemm = 2 * rows * (dim * m.q_lora_rank + m.q_lora_rank * heads * m.qk_dim
                           + dim * (m.kv_lora_rank + m.qk_rope_dim) + heads * m.v_head_dim * dim)
    if problem.moe is not None:
        moe = family("moe")
        mlp_flops, mlp_bytes = moe.work(moe.variant(variant.router), problem.moe, backward)
    else:
        gated = variant.mlp in ("swiglu", "geglu")
        mlp_flops, mlp_bytes = (6 if gated else 4) * rows * dim * config.ffn_dim * (3 if backward else 1), 0
    lin = config.linear_config
    if lin is not None:  # q, k, v, z, b, a in, the convolution, the output out; the rule as linear counts it
        key, value = lin.n_qk_heads * lin.k_dim, lin.n_v_heads * lin.v_dim
        gemm = 2 * rows * dim * (2 * key + 2 * value + 2 * lin.n_v_heads) + 2 * rows * value * dim
        gemm += 2 * rows * (2 * key + value) * config.conv
        attention, piece_flops = 0, family("linear").work(variant.attention, problem.linear, backward)[0]
    elif m is not None:  # the latent's expansion and the pairs, the backward's too, as the mla family counts them
        attention, piece_flops = 0, family("mla").work(variant.attention, problem.mla, backward)[0]
    else:
        empty = torch.empty(batch, heads, routed, 0)
        pairs = visible_pairs(variant.attention, AttentionProblem(empty, torch.empty(batch, kv_heads, kv_len, 0),
                                                                  None, None, problem.seed))
        attention = 4 * heads * head_dim * pairs
    matmuls = gemm + (2 * batch * tokens * dim if variant.depth_capacity is not None else 0)
    flops = mlp_flops + piece_flops + (3 * matmuls + attention * 7 // 2 if backward else matmuls + attention)
    elem = problem.x.element_size()
    # every weight once, a latent attention's up-projections (its piece's own problem's) among them
    weights = sum(t.numel() for sub in (problem, problem.mla) if sub is not None for t in sub.weights().values()) * elem
    caches = sum(t.numel() for t in (problem.k_cache, problem.v_cache, problem.latent_cache, problem.conv_state)
                 if t is not None) * elem
    if problem.delta_state is not None:  # the rule's state (float32), read and written once a step
        caches += 2 * problem.delta_state.numel() * problem.delta_state.element_size()
    nbytes = weights + 2 * problem.x.numel() * elem + caches
    return flops, mlp_bytes + nbytes * (2 if backward else 1)
