"""flash-linear-attention's chunked gated delta rule (`fla-core`, a peer: `pip install .[peers]`), the
fused kernel the field uses for Gated DeltaNet (Qwen3-Next's layers run it). Same layout as ours:
q, k (B, T, H, K), v (B, T, HV, V), g and beta (B, T, HV); q and k arrive L2-normalised.

Its backward is fla's own (chunk_gated_delta_rule is an autograd.Function): the inputs go to it as they
are, so nothing here can cut a gradient (tests/test_linear_backward.py checks that around a stand-in;
fla's backward itself is unmeasured on any GPU here). A decode step goes through its fused recurrent
kernel instead, from the problem's state."""


def prepare_function(variant, problem):
    """fla's chunked kernel as a function of any q, k, v, g, beta of the problem's shapes (a block's)."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    scale = problem.scale

    def attend(q, k, v, g, beta):
        return chunk_gated_delta_rule(q, k, v, g, beta, scale=scale)[0]

    attend.backend = "fla"
    return attend


def prepare_step(variant, problem):
    """fla's fused recurrent kernel for a decode step: one token a sequence from the problem's state,
    which fla reads and returns value-major as ours ([B, HV, V, K]: state_v_first)."""
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

    p = problem

    # Every gate by keyword: fla 0.6.0's fifth parameter is gk, a per-key decay, not beta. Passed in
    # that place, beta became a decay and beta itself None: max error inf on an H200 (session 14).
    def call():
        return fused_recurrent_gated_delta_rule(p.q, p.k, p.v, g=p.g, beta=p.beta, scale=p.scale,
                                                initial_state=p.state, output_final_state=True, state_v_first=True)

    call()
    call.backend = "fla (fused recurrent)"
    return call


def prepare(variant, problem):
    p = problem
    if p.state is not None:
        return prepare_step(variant, p)
    attend = prepare_function(variant, p)

    def call():
        return attend(p.q, p.k, p.v, p.g, p.beta)

    call()
    return call
