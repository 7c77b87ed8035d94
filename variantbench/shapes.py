"""Named shapes: one table of model configurations, and the benchmark shapes built from them.

Benchmark grids only grow: never change what an existing shape name means; add a new name.
"""

from dataclasses import dataclass, replace


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


def named(table, name: str, kind: str):
    """The entry of `table` called `name`; KeyError listing the known names otherwise."""
    for entry in table:
        if entry.name == name:
            return entry
    raise KeyError(f"unknown {kind} {name!r}; known: {', '.join(e.name for e in table)}")


def model(name: str) -> ModelConfig:
    return named(MODELS, name, "model")


# Which shapes a run covers, smallest first; each tier includes the ones before it.
#   quick:   the headline shapes, for a first look (`variantbench run --quick`);
#   default: what every commit is measured on, sized to keep a run (and so a PR gate, which runs
#            base and head) within minutes on one GPU. asv runs every (benchmark, parameters) in its
#            own process, so every process compiles its case: on an H100 host a FlexAttention case
#            took 18-20 s of setup cold, our autotuned Triton kernel 11 s, SDPA 3-5 s (a9b07b9), and
#            one shape's forward grid about 4 minutes;
#   full:    the whole grid, for nightly history (`--tier full`).
TIERS = ("quick", "default", "full")


def in_tier(item, tier: str) -> bool:
    """Whether a run of `tier` includes `item` (a shape, an implementation, or a variant with a `tier`
    of its own; a variant without one runs wherever its shapes do)."""
    return TIERS.index(getattr(item, "tier", TIERS[0])) <= TIERS.index(tier)


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
    # Long context, where a block-sparse selection's savings show (block_topk_16 reads 17 of 1024 blocks).
    AttentionShape("llama-3-8b-s64k", "llama-3-8b", batch=1, q_len=65536, kv_len=65536),
    # One sequence of 32k, beside the linear family's qwen3-next-t32k: Gated DeltaNet's wall time against
    # attention's at the same tokens. (One sequence of 4k, beside qwen3-next-t4k, moves 50 MB: inside
    # twice an H200's L2, which test_gpu_shapes_do_not_fit_in_l2 keeps out of the attention grid.)
    AttentionShape("llama-3-8b-s32k", "llama-3-8b", batch=1, q_len=32768, kv_len=32768),
    AttentionShape("llama-3-70b-s4k", "llama-3-70b", batch=4, q_len=4096, kv_len=4096),
    AttentionShape("llama-3-70b-s16k", "llama-3-70b", batch=1, q_len=16384, kv_len=16384),
    AttentionShape("llama-3-8b-decode-kv8k", "llama-3-8b", batch=16, q_len=1, kv_len=8192),
    # Chunked prefill: 512 new tokens at the end of an 8k context, a serving engine's mixed step. SDPA's
    # is_causal is top-left aligned, so SDPA gets the dense bottom-right mask here.
    AttentionShape("llama-3-8b-chunk512-kv8k", "llama-3-8b", batch=4, q_len=512, kv_len=8192),
    AttentionShape("tiny-s128", "tiny", batch=2, q_len=128, kv_len=128, device="cpu", tier="quick"),
    AttentionShape("tiny-decode-kv256", "tiny", batch=2, q_len=1, kv_len=256, device="cpu", tier="default"),
    AttentionShape("tiny-chunk48-kv176", "tiny", batch=2, q_len=48, kv_len=176, device="cpu"),
)


@dataclass(frozen=True)
class MoEConfig:
    """A mixture-of-experts layer: `n_experts` SwiGLU experts of `ffn_dim`, `top_k` per token,
    `n_shared` always-on shared experts (of `ffn_dim` each), and for group-limited routing
    `n_groups` expert groups of which `topk_groups` are eligible per token."""

    name: str
    n_experts: int
    top_k: int
    dim: int
    ffn_dim: int
    n_shared: int = 0
    n_groups: int = 1
    topk_groups: int = 1
    routed_scale: float = 1.0  # DeepSeek-V3 scales the normalised routed weights by 2.5


MOE_MODELS = (
    MoEConfig("mixtral-8x7b", n_experts=8, top_k=2, dim=4096, ffn_dim=14336),
    MoEConfig("deepseek-v3", n_experts=256, top_k=8, dim=7168, ffn_dim=2048, n_shared=1, n_groups=8, topk_groups=4,
              routed_scale=2.5),
    MoEConfig("qwen3-moe", n_experts=128, top_k=8, dim=2048, ffn_dim=768),  # Qwen3-30B-A3B
    # Qwen3-Next-80B-A3B (its shared expert's sigmoid gate left out)
    MoEConfig("qwen3-next", n_experts=512, top_k=10, dim=2048, ffn_dim=512, n_shared=1),
    # CPU-sized, with a shared expert and 4 groups so every routing path runs in the tests.
    MoEConfig("tiny-moe", n_experts=8, top_k=2, dim=64, ffn_dim=128, n_shared=1, n_groups=4, topk_groups=2),
)


def moe_model(name: str) -> MoEConfig:
    """The MoE model of that name; `model@N` is the model with only N routed experts, as many in each
    of its groups, its eligible groups still holding its top-k: the gradient check's stand-in for a
    layer whose float64 copies would not fit (variantbench/catalog/moe.py)."""
    base, _, experts = name.partition("@")
    config = named(MOE_MODELS, base, "MoE model")
    if not experts:
        return config
    if not experts.isdigit() or int(experts) % config.n_groups or \
            int(experts) // config.n_groups * config.topk_groups < config.top_k:
        raise KeyError(f"MoE model {name!r}: after '@' a count of routed experts, a multiple of its "
                       f"{config.n_groups} groups whose {config.topk_groups} eligible hold its top-{config.top_k}")
    return replace(config, name=name, n_experts=int(experts))


SKEWS = ("uniform", "zipf")


@dataclass(frozen=True)
class MoEShape:
    """`tokens` tokens through one MoE layer. `skew` is the routing load: "uniform" (router logits of
    seeded random data), or "zipf" (expert e, in a seeded order, drawn with probability ~ 1/rank^1.2:
    the hot-expert load real routers see); the seed is the problem's."""

    name: str
    model: str
    tokens: int
    skew: str = "uniform"
    device: str = "cuda"
    tier: str = "full"

    @property
    def config(self) -> MoEConfig:
        return moe_model(self.model)

    @property
    def phase(self) -> str:
        # Up to 64 tokens each expert's weights are read for a handful of rows: bandwidth bound.
        return "decode" if self.tokens <= 64 else "prefill"


# Prefill: 4k-8k tokens, compute bound. Decode: 16 tokens, bound by reading the weights of every
# expert they reach. Each at both routing loads. The default tier takes one Mixtral prefill and one
# decode, both at the skewed (zipf) load a real router produces: the attention default tier alone ran
# 539 s of the 10-minute budget on an H100 (edacf1b), and the uniform load's figures moved with the
# zipf ones in every gate so far (reports/gate/aa-*), so it waits for the full tier.
MOE_SHAPES = (
    MoEShape("mixtral-8x7b-prefill-t8k-uniform", "mixtral-8x7b", 8192, "uniform"),
    MoEShape("mixtral-8x7b-prefill-t8k-zipf", "mixtral-8x7b", 8192, "zipf", tier="default"),
    MoEShape("mixtral-8x7b-decode-t16-uniform", "mixtral-8x7b", 16, "uniform"),
    MoEShape("mixtral-8x7b-decode-t16-zipf", "mixtral-8x7b", 16, "zipf", tier="default"),
    MoEShape("deepseek-v3-prefill-t4k-uniform", "deepseek-v3", 4096, "uniform"),
    MoEShape("deepseek-v3-prefill-t4k-zipf", "deepseek-v3", 4096, "zipf"),
    MoEShape("deepseek-v3-decode-t16-uniform", "deepseek-v3", 16, "uniform"),
    MoEShape("deepseek-v3-decode-t16-zipf", "deepseek-v3", 16, "zipf"),
    MoEShape("qwen3-moe-prefill-t8k-uniform", "qwen3-moe", 8192, "uniform"),
    MoEShape("qwen3-moe-decode-t16-zipf", "qwen3-moe", 16, "zipf"),
    MoEShape("tiny-moe-t64-uniform", "tiny-moe", 64, "uniform", device="cpu", tier="quick"),
    MoEShape("tiny-moe-t64-zipf", "tiny-moe", 64, "zipf", device="cpu", tier="quick"),
)


@dataclass(frozen=True)
class CommsShape:
    """One collective of `nbytes` per rank, over every GPU of the machine on CUDA (one process each;
    skipped below 2) or 2 gloo processes on the CPU. Small sizes are latency bound, large ones
    bandwidth bound: the sweep covers both."""

    name: str
    nbytes: int
    device: str = "cuda"
    tier: str = "default"


COMMS_SHAPES = (
    CommsShape("comms-8k", 8 * 2**10),
    CommsShape("comms-1m", 2**20),
    CommsShape("comms-64m", 64 * 2**20),
    CommsShape("comms-1g", 2**30),
    CommsShape("comms-cpu-4k", 4 * 2**10, device="cpu", tier="quick"),
    CommsShape("comms-cpu-256k", 256 * 2**10, device="cpu"),
)


@dataclass(frozen=True)
class MLAConfig:
    """Multi-head latent attention (DeepSeek-V2/V3): per token the cache holds a latent of
    `kv_lora_rank` and one RoPE key of `qk_rope_dim` shared by every head; head h expands the latent to
    a `qk_nope_dim` key part and a `v_head_dim` value. `q_lora_rank`, the query's own compression, is
    applied before the attention call (the block family's business), kept here as the config has it."""

    name: str
    n_heads: int
    kv_lora_rank: int
    qk_nope_dim: int
    qk_rope_dim: int
    v_head_dim: int
    q_lora_rank: int

    @property
    def qk_dim(self) -> int:
        return self.qk_nope_dim + self.qk_rope_dim


MLA_MODELS = (
    MLAConfig("deepseek-v3", n_heads=128, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128,
              q_lora_rank=1536),
    # CPU-sized; every dim at least 16, the smallest a Triton dot takes.
    MLAConfig("tiny-mla", n_heads=8, kv_lora_rank=32, qk_nope_dim=16, qk_rope_dim=16, v_head_dim=16, q_lora_rank=64),
)


@dataclass(frozen=True)
class MLAShape(AttentionShape):
    """An attention shape over a latent cache of `kv_len` tokens, its model one of MLA_MODELS."""

    @property
    def config(self) -> MLAConfig:
        return named(MLA_MODELS, self.model, "MLA model")


# Decode at batch 64 is where serving spends MLA's time: 64 x 8k tokens x 576 values is a 604 MB
# latent cache read per step (bfloat16). Prefill keeps 16k tokens a call, as attention's shapes do.
MLA_SHAPES = (
    MLAShape("deepseek-v3-mla-decode-b64-kv8k", "deepseek-v3", batch=64, q_len=1, kv_len=8192, tier="default"),
    MLAShape("deepseek-v3-mla-decode-b64-kv32k", "deepseek-v3", batch=64, q_len=1, kv_len=32768),
    MLAShape("deepseek-v3-mla-prefill-s4k", "deepseek-v3", batch=4, q_len=4096, kv_len=4096),
    MLAShape("deepseek-v3-mla-prefill-s16k", "deepseek-v3", batch=1, q_len=16384, kv_len=16384),
    MLAShape("tiny-mla-s80", "tiny-mla", batch=2, q_len=80, kv_len=80, device="cpu", tier="quick"),
    MLAShape("tiny-mla-decode-kv200", "tiny-mla", batch=3, q_len=1, kv_len=200, device="cpu", tier="quick"),
)


@dataclass(frozen=True)
class LinearConfig:
    """A linear-attention layer: `n_qk_heads` query/key heads of `k_dim`, `n_v_heads` value heads of
    `v_dim` (more value heads than key heads: value head h reads key head h // (n_v / n_qk))."""

    name: str
    n_qk_heads: int
    n_v_heads: int
    k_dim: int
    v_dim: int


LINEAR_MODELS = (
    LinearConfig("qwen3-next", n_qk_heads=16, n_v_heads=32, k_dim=128, v_dim=128),  # Qwen3-Next-80B-A3B
    LinearConfig("tiny-linear", n_qk_heads=2, n_v_heads=4, k_dim=16, v_dim=16),
)


@dataclass(frozen=True)
class LinearShape:
    """One linear-attention call over `tokens` tokens of each of `batch` sequences: a prefill from a
    zero state, or with `decode` one new token each from the state of the tokens before (the state
    replaces the KV cache: its size is the context's at any length)."""

    name: str
    model: str
    batch: int
    tokens: int
    device: str = "cuda"
    tier: str = "full"
    decode: bool = False

    def __post_init__(self):
        if self.decode and self.tokens != 1:
            raise ValueError(f"LinearShape {self.name!r}: a decode step brings one token a sequence, not {self.tokens}")

    @property
    def config(self) -> LinearConfig:
        return named(LINEAR_MODELS, self.model, "linear-attention model")

    @property
    def phase(self) -> str:
        return "decode" if self.decode else "prefill"

    @property
    def q_len(self) -> int:
        return self.tokens


# Where linear attention is meant to pay: 4k to 64k tokens, one sequence (the state is per sequence).
LINEAR_SHAPES = (
    LinearShape("qwen3-next-t4k", "qwen3-next", batch=1, tokens=4096),
    # Four sequences of 4k: the tokens of attention's llama-3-8b-s4k (batch 4), for the wall-time
    # crossover at 4k (one 4k sequence is no attention shape: 50 MB, inside twice an H200's L2)
    LinearShape("qwen3-next-b4-t4k", "qwen3-next", batch=4, tokens=4096),
    LinearShape("qwen3-next-t16k", "qwen3-next", batch=1, tokens=16384),
    LinearShape("qwen3-next-t32k", "qwen3-next", batch=1, tokens=32768),
    LinearShape("qwen3-next-t64k", "qwen3-next", batch=1, tokens=65536),
    # Decode: 64 sequences a step, each reading and writing its 32 heads' 128 x 128 float32 state
    # (2 MiB): 268 MB a step, bandwidth bound, what Qwen3-Next's linear layers cost a served token.
    LinearShape("qwen3-next-decode-b64", "qwen3-next", batch=64, tokens=1, decode=True),
    LinearShape("tiny-linear-t100", "tiny-linear", batch=2, tokens=100, device="cpu", tier="quick"),
    LinearShape("tiny-linear-decode-b3", "tiny-linear", batch=3, tokens=1, device="cpu", tier="quick", decode=True),
)


@dataclass(frozen=True)
class PagedShape:
    """One decode step over a paged KV cache: `batch` sequences of one new token each, their keys in
    pages of `page_size` tokens scattered over a shared pool through a page table. `lengths`: "equal"
    (every sequence `kv_len` long) or "mixed" (seeded lengths from kv_len / 8 to kv_len)."""

    name: str
    model: str
    batch: int
    kv_len: int
    page_size: int
    lengths: str = "equal"
    device: str = "cuda"
    tier: str = "full"
    phase = "decode"
    q_len = 1

    @property
    def config(self) -> ModelConfig:
        return model(self.model)


# The default tier's attention decode: batch 64 over 8k in pages of 16 (vLLM's default page size),
# the serving path; the rest of the decode grid is nightly (full tier).
PAGED_SHAPES = (
    PagedShape("llama-3-8b-paged16-b64-kv8k", "llama-3-8b", batch=64, kv_len=8192, page_size=16, tier="default"),
    PagedShape("llama-3-8b-paged64-b64-kv8k", "llama-3-8b", batch=64, kv_len=8192, page_size=64),
    PagedShape("llama-3-8b-paged16-b64-mixed8k", "llama-3-8b", batch=64, kv_len=8192, page_size=16, lengths="mixed"),
    # batch 1 over 128k: 8 KV heads are 8 programs unless the cache is split (our kernel splits it)
    PagedShape("llama-3-8b-paged16-b1-kv128k", "llama-3-8b", batch=1, kv_len=131072, page_size=16),
    PagedShape("tiny-paged4-b3-mixed37", "tiny", batch=3, kv_len=37, page_size=4, lengths="mixed", device="cpu",
               tier="quick"),
    PagedShape("tiny-paged16-b2-kv32", "tiny", batch=2, kv_len=32, page_size=16, device="cpu"),
)
