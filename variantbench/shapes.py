"""Named shapes: one table of model configurations, and the benchmark shapes built from them.

Benchmark grids only grow: never change what an existing shape name means; add a new name.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    name: str
    n_heads: int
    n_kv_heads: int
    head_dim: int
    dim: int


MODELS = (
    ModelConfig("llama-3-8b", n_heads=32, n_kv_heads=8, head_dim=128, dim=4096),
    ModelConfig("llama-3-70b", n_heads=64, n_kv_heads=8, head_dim=128, dim=8192),
    # CPU-sized geometry for the quick run and the tests: 16 heads so gqa_8 still groups (2 per KV head).
    ModelConfig("tiny", n_heads=16, n_kv_heads=4, head_dim=32, dim=512),
)


def model(name: str) -> ModelConfig:
    for config in MODELS:
        if config.name == name:
            return config
    raise KeyError(f"unknown model {name!r}; known: {', '.join(m.name for m in MODELS)}")


# Which shapes a run covers, smallest first; each tier includes the ones before it.
#   quick:   the headline shapes, for a first look (`variantbench run --quick`);
#   default: what every commit is measured on, sized to keep a run (and so a PR gate, which runs
#            base and head) within minutes on one GPU. asv runs every (benchmark, parameters) in its
#            own process, so every process compiles its case: on an H100 host a FlexAttention case
#            took 18-20 s of setup cold, our autotuned Triton kernel 11 s, SDPA 3-5 s (a9b07b9), and
#            one shape's forward grid about 4 minutes;
#   full:    the whole grid, for nightly history (`--tier full`).
TIERS = ("quick", "default", "full")


def in_tier(shape, tier: str) -> bool:
    return TIERS.index(shape.tier) <= TIERS.index(tier)


@dataclass(frozen=True)
class AttentionShape:
    """One attention call: `batch` sequences of `q_len` queries over `kv_len` keys.

    Prefill has q_len == kv_len; decode has one query token per sequence over a KV cache of kv_len.
    `device` says where the shape belongs: "cuda" shapes are the real grid, "cpu" shapes the quick
    CPU run (figures from them are CPU figures, not GPU predictions). `tier` says which runs include
    it (see TIERS).
    """

    name: str
    model: str
    batch: int
    q_len: int
    kv_len: int
    device: str = "cuda"
    tier: str = "full"

    @property
    def config(self) -> ModelConfig:
        return model(self.model)

    @property
    def phase(self) -> str:
        return "prefill" if self.q_len == self.kv_len else "decode"


# Prefill keeps 16k tokens per call (batch x seq) so every sequence length fills an H100.
ATTENTION_SHAPES = (
    AttentionShape("llama-3-8b-s1k", "llama-3-8b", batch=16, q_len=1024, kv_len=1024),
    AttentionShape("llama-3-8b-s4k", "llama-3-8b", batch=4, q_len=4096, kv_len=4096, tier="quick"),
    AttentionShape("llama-3-8b-s16k", "llama-3-8b", batch=1, q_len=16384, kv_len=16384),
    AttentionShape("llama-3-70b-s4k", "llama-3-70b", batch=4, q_len=4096, kv_len=4096),
    AttentionShape("llama-3-70b-s16k", "llama-3-70b", batch=1, q_len=16384, kv_len=16384),
    AttentionShape("llama-3-8b-decode-kv8k", "llama-3-8b", batch=16, q_len=1, kv_len=8192),
    AttentionShape("tiny-s128", "tiny", batch=2, q_len=128, kv_len=128, device="cpu", tier="quick"),
    AttentionShape("tiny-decode-kv256", "tiny", batch=2, q_len=1, kv_len=256, device="cpu", tier="default"),
)
