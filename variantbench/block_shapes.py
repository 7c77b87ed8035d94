"""The block family's model dimensions and shapes (variantbench/catalog/block.py holds the recipes).

A block's dimensions come from its model's config (the table below, each from the model's published
config.json); a shape is how many sequences of how many tokens go through it, the same for every
block, at the model's own size or at a tiny one that keeps the model's structure (heads per KV head,
experts per token, RMS or layer norm) for the CPU.
"""

from dataclasses import dataclass, replace

from variantbench.shapes import (LINEAR_MODELS, MLA_MODELS, AttentionShape, LinearConfig, MLAConfig, ModelConfig,
                                 MoEConfig, moe_model, named)


@dataclass(frozen=True)
class BlockConfig:
    """One transformer layer's dimensions. `ffn_dim`: the dense MLP's hidden size (0 for an MoE
    block, whose experts' sizes are its `moe` model's, one of shapes.MOE_MODELS). `mla`: a latent-
    attention block's MLA geometry (shapes.MLA_MODELS; its heads are `n_heads`, its value head
    `head_dim`)."""

    name: str
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int = 0
    moe: str | None = None
    mla: str | None = None
    linear: str | None = None  # a gated-DeltaNet block's geometry (shapes.LINEAR_MODELS)
    conv: int = 4  # its short causal convolution's width
    rope_theta: float = 500000.0
    eps: float = 1e-5

    @property
    def moe_config(self) -> MoEConfig | None:
        return moe_model(self.moe) if self.moe else None

    @property
    def mla_config(self) -> MLAConfig | None:
        return named(MLA_MODELS, self.mla, "MLA model") if self.mla else None

    @property
    def linear_config(self) -> LinearConfig | None:
        return named(LINEAR_MODELS, self.linear, "linear-attention model") if self.linear else None

    @property
    def attention(self) -> ModelConfig:
        return ModelConfig(self.name, self.n_heads, self.n_kv_heads, self.head_dim, self.dim)

    def tiny(self) -> "BlockConfig":
        """The same structure at CPU size: 4 query heads per KV head where the model groups them, head
        dim 16, model dim 64, MLP 96; an MoE block takes tiny-moe's 8 experts of top-2 (dim 64)."""
        group = self.n_heads // self.n_kv_heads
        n_kv = 1 if group >= 4 else 4 // group
        heads = n_kv * min(group, 4)
        if self.mla:  # tiny-mla's heads, one "KV head" each as the latent serves all
            heads = n_kv = named(MLA_MODELS, "tiny-mla", "MLA model").n_heads
        if self.linear:  # tiny-linear's value and key heads
            tiny = named(LINEAR_MODELS, "tiny-linear", "linear-attention model")
            heads, n_kv = tiny.n_v_heads, tiny.n_qk_heads
        return BlockConfig(f"tiny-{self.name}", dim=64, n_heads=heads, n_kv_heads=n_kv, head_dim=16,
                           ffn_dim=96 if self.ffn_dim else 0, moe="tiny-moe" if self.moe else None,
                           mla="tiny-mla" if self.mla else None, linear="tiny-linear" if self.linear else None,
                           conv=self.conv, rope_theta=self.rope_theta, eps=self.eps)


BLOCK_MODELS = (
    BlockConfig("llama-3-8b", dim=4096, n_heads=32, n_kv_heads=8, head_dim=128, ffn_dim=14336),
    BlockConfig("gemma-2-9b", dim=3584, n_heads=16, n_kv_heads=8, head_dim=256, ffn_dim=14336, rope_theta=10000.0,
                eps=1e-6),
    BlockConfig("qwen3-30b-a3b", dim=2048, n_heads=32, n_kv_heads=4, head_dim=128, moe="qwen3-moe",
                rope_theta=1000000.0, eps=1e-6),
    BlockConfig("mixtral-8x7b", dim=4096, n_heads=32, n_kv_heads=8, head_dim=128, moe="mixtral-8x7b",
                rope_theta=1000000.0),
    # DeepSeek-V3: multi-head latent attention (128 heads; values 128 wide) and 256 routed experts
    # top-8 plus a shared one; RoPE theta 10000 (its YaRN scaling, which starts past 4k, left out).
    BlockConfig("deepseek-v3", dim=7168, n_heads=128, n_kv_heads=128, head_dim=128, moe="deepseek-v3",
                mla="deepseek-v3", rope_theta=10000.0, eps=1e-6),
    # Qwen3-Next-80B-A3B's linear-attention layer (three of every four): gated DeltaNet, 16 key heads
    # and 32 value heads of 128 (n_heads counts the value heads), then 512 experts top-10.
    BlockConfig("qwen3-next-80b-a3b", dim=2048, n_heads=32, n_kv_heads=16, head_dim=128, moe="qwen3-next",
                linear="qwen3-next", eps=1e-6),
    # ViT-L/16: 24 layers of this, 16 heads of 64, LayerNorm, a GELU MLP of 4096; positions are added
    # to the patch embeddings before the first block, so the block itself has no RoPE.
    BlockConfig("vit-l16", dim=1024, n_heads=16, n_kv_heads=16, head_dim=64, ffn_dim=4096, eps=1e-6),
)


def block_model(name: str) -> BlockConfig:
    return named(BLOCK_MODELS, name, "block model")


@dataclass(frozen=True)
class PieceAttentionShape(AttentionShape):
    """The attention call inside a block: an attention shape whose heads are the block model's."""

    heads: ModelConfig | None = None

    @property
    def config(self) -> ModelConfig:
        return self.heads


@dataclass(frozen=True)
class BlockShape:
    """`batch` sequences through one block: `q_len` new tokens each, attending to `kv_len` positions
    (prefill: q_len == kv_len; decode: one new token over a KV cache of kv_len - 1 earlier ones).
    `size`: "model" (the recipe's model's dimensions) or "tiny" (BlockConfig.tiny). `moe_experts`: an
    MoE block with only that many routed experts (its MoE model's `@N`), the gradient check's stand-in."""

    name: str
    batch: int
    q_len: int
    kv_len: int
    size: str = "model"
    device: str = "cuda"
    tier: str = "full"
    moe_experts: int | None = None

    @property
    def phase(self) -> str:
        return "prefill" if self.q_len == self.kv_len else "decode"

    def config(self, model: str) -> BlockConfig:
        config = block_model(model)
        config = config.tiny() if self.size == "tiny" else config
        return replace(config, moe=f"{config.moe}@{self.moe_experts}") if self.moe_experts else config

    def attention_shape(self, model: str) -> PieceAttentionShape:
        config = self.config(model)
        return PieceAttentionShape(f"{self.name}-attention", config.name, self.batch, self.q_len, self.kv_len,
                                   self.device, self.tier, heads=config.attention)


# Prefill keeps 16k tokens a call, as attention's shapes do; decode is a serving step of 64 sequences
# over 4k-token caches. prefill-b4-s4k is the default tier's block shape, where only the family
# baseline's recipe runs (catalog/block.py BlockVariant.tier).
BLOCK_SHAPES = (
    BlockShape("prefill-b4-s4k", batch=4, q_len=4096, kv_len=4096, tier="default"),
    BlockShape("prefill-b1-s16k", batch=1, q_len=16384, kv_len=16384),
    BlockShape("decode-b64-kv4k", batch=64, q_len=1, kv_len=4096),
    BlockShape("tiny-prefill-b2-s48", batch=2, q_len=48, kv_len=48, size="tiny", device="cpu", tier="quick"),
    BlockShape("tiny-decode-b2-kv40", batch=2, q_len=1, kv_len=40, size="tiny", device="cpu"),
)
