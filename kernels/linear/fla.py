"""flash-linear-attention's chunked gated delta rule (`fla-core`, a peer: `pip install .[peers]`), the
fused kernel the field uses for Gated DeltaNet (Qwen3-Next's layers run it). Same layout as ours:
q, k (B, T, H, K), v (B, T, HV, V), g and beta (B, T, HV); q and k arrive L2-normalised."""


def prepare(variant, problem):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    p = problem

    def call():
        return chunk_gated_delta_rule(p.q, p.k, p.v, p.g, p.beta, scale=p.scale)[0]

    call()
    return call
