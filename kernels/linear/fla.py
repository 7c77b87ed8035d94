"""flash-linear-attention's chunked gated delta rule (`fla-core`, a peer: `pip install .[peers]`), the
fused kernel the field uses for Gated DeltaNet (Qwen3-Next's layers run it). Same layout as ours:
q, k (B, T, H, K), v (B, T, HV, V), g and beta (B, T, HV); q and k arrive L2-normalised.

Its backward is fla's own (chunk_gated_delta_rule is an autograd.Function): the inputs go to it as they
are, so nothing here can cut a gradient (tests/test_linear_backward.py checks that around a stand-in;
fla's backward itself is unmeasured on any GPU here). A decode step goes through its fused recurrent
kernel instead, from the problem's state."""


def prepare_function(variant, problem):
    """fla's chunked kernel as a function of any q, k, v, g, beta of the problem's shapes (a block's);
    at decode its fused recurrent kernel, of any q, k, v, g, beta, state, returning (output, new
    state), the state value-major as ours ([B, HV, V, K]: state_v_first)."""
    scale = problem.scale
    if problem.state is not None:
        from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

        # Every gate by keyword: fla-core 0.6.0's fifth parameter is gk, a per-key decay. Passed by
        # place, beta went there and beta itself was None: max error inf on an H200 (session 14).
        def step(q, k, v, g, beta, state):
            return fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, scale=scale, initial_state=state,
                                                    output_final_state=True, state_v_first=True)

        step.backend = "fla (fused recurrent)"
        return step
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    def attend(q, k, v, g, beta):
        return chunk_gated_delta_rule(q, k, v, g, beta, scale=scale)[0]

    attend.backend = "fla"
    return attend


def prepare(variant, problem):
    p = problem
    function = prepare_function(variant, p)
    state = () if p.state is None else (p.state,)

    def call():
        return function(p.q, p.k, p.v, p.g, p.beta, *state)

    call()
    call.backend = function.backend
    return call
