"""A block family problem: the layer's input and weights (BlockProblem), as every block implementation
and the reference take it; drawn by variantbench/catalog/block.py's make_problem."""

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch

class CheckRows(NamedTuple):
    """The rows a block's check compares, decided once for a problem's seed and rows asked: the sampled
    positions, and (B, positions, 1) which sequences' rows there are compared (reference/block.py
    routing_decided)."""

    seed: int
    asked: int
    positions: torch.Tensor
    decided: torch.Tensor


WEIGHTS = ("wq", "wk", "wv", "w_dq", "q_a_norm", "w_uq", "w_dkv", "kv_a_norm", "w_qkvz", "w_ba", "conv_weight", "a_log",
           "dt_bias", "out_norm", "wo", "attn_norm", "mlp_norm",
           "post_attn_norm", "post_mlp_norm", "q_norm", "k_norm", "w13", "w2", "depth_router")


@dataclass
class BlockProblem:
    """x (B, S, dim); the layer's weights in nn.Linear's (out, in) layout, None where the recipe has no
    such piece; an MoE block's experts and router as a moe-family problem (`moe`); at decode the KV
    cache (B, Hkv, kv_len, D), the new token's key and value going to its last position (a latent
    block's latent cache; a Gated DeltaNet block's convolution and rule states, which a step reads
    and leaves as they were: its new state is returned, not written back)."""

    config: object
    x: torch.Tensor
    seed: int
    wo: torch.Tensor
    attn_norm: torch.Tensor
    mlp_norm: torch.Tensor
    wq: torch.Tensor | None = None
    wk: torch.Tensor | None = None
    wv: torch.Tensor | None = None
    # multi-head latent attention (DeepSeek-V3), in place of wq, wk, wv: the query's down and up
    # projections and the norm between, the latent's down projection (to rank + RoPE key) and norm
    w_dq: torch.Tensor | None = None
    q_a_norm: torch.Tensor | None = None
    w_uq: torch.Tensor | None = None
    w_dkv: torch.Tensor | None = None
    kv_a_norm: torch.Tensor | None = None
    mla: object = None  # its latent's up projections (w_uk, w_uv) as an mla-family problem
    # gated DeltaNet (Qwen3-Next), in place of attention: q, k, v and the gate z projected together,
    # b and a (write strength, decay) per value head, the short convolution's weights (channels,
    # width), the decay's log scale and bias, the output's per-head norm
    w_qkvz: torch.Tensor | None = None
    w_ba: torch.Tensor | None = None
    conv_weight: torch.Tensor | None = None
    a_log: torch.Tensor | None = None
    dt_bias: torch.Tensor | None = None
    out_norm: torch.Tensor | None = None
    linear: object = None  # a linear-family problem of the block's sizes (to pick its fused call by)
    # gated DeltaNet at decode, its cache: the last width - 1 tokens' q, k, v channels before the short
    # convolution (B, width - 1, channels), and the rule's state after them (B, HV, V, K) float32
    conv_state: torch.Tensor | None = None
    delta_state: torch.Tensor | None = None
    latent_cache: torch.Tensor | None = None  # (B, kv_len, rank + RoPE) at decode
    post_attn_norm: torch.Tensor | None = None
    post_mlp_norm: torch.Tensor | None = None
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None
    w13: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    depth_router: torch.Tensor | None = None
    moe: object = None
    k_cache: torch.Tensor | None = None
    v_cache: torch.Tensor | None = None
    shape: object = None  # the BlockShape it was drawn for (a split block's ranks draw it again)
    check_outputs: list | None = None  # a split block's outputs of its check run, one per rank
    check_rows: "CheckRows | None" = None  # what the check compares (catalog/block.py check_views)

    @property
    def device(self):
        return self.x.device

    @property
    def cache(self):
        if self.latent_cache is not None:
            return self.latent_cache
        if self.delta_state is not None:
            return self.conv_state, self.delta_state
        return None if self.k_cache is None else (self.k_cache, self.v_cache)

    def weights(self):
        return {name: getattr(self, name) for name in WEIGHTS if getattr(self, name) is not None}

    def inputs(self):
        caches = {name: t for name, t in (("k_cache", self.k_cache), ("v_cache", self.v_cache),
                                          ("latent_cache", self.latent_cache), ("conv_state", self.conv_state),
                                          ("delta_state", self.delta_state)) if t is not None}
        return {"x": self.x, **self.weights(), **caches}

    def grad_inputs(self):
        """x and every weight of the layer, an MoE's router and experts and a latent attention's up-
        projections included: a training step's backward computes them all."""
        return (self.x, *self.weights().values(),
                *(t for sub in (self.mla, self.moe) if sub is not None for t in sub.weights().values()))

    def converted(self, dtype):
        """The same problem in `dtype` (the reference's), tensors already in it kept as they are."""
        moe = self.moe
        if moe is not None:
            moe = dataclasses.replace(moe, **{n: getattr(moe, n).to(dtype) for n in ("x", "router_weight", "w13", "w2")},
                                      **{n: getattr(moe, n).to(dtype) for n in ("shared13", "shared2")
                                         if getattr(moe, n) is not None})
        mla = self.mla
        if mla is not None:
            mla = dataclasses.replace(mla, w_uk=mla.w_uk.to(dtype), w_uv=mla.w_uv.to(dtype))
        tensors = {name: t.to(dtype) for name, t in self.inputs().items()}
        return dataclasses.replace(self, moe=moe, mla=mla, **tensors)
