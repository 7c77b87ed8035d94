"""`compiled`, torch.compile of the reference, on the CPU (inductor's C++ backend): every built-in
attention and MoE variant passes `check`, fullgraph for attention and with the routing's graph break
for MoE; a mask dynamo cannot trace is compiled with graph breaks and says where; a compiler that
fails is a skip with its reason in `check` and in the suite; the compile happens in prepare."""

import io

import pytest
import torch

from variantbench import cases, check_workers
from variantbench.catalog import family
from variantbench.catalog.attention import AttentionVariant

COMPILED_CASES = [c for name in ("attention", "moe")
                  for c in cases.iter_cases(name, "cpu", implementations=["compiled"]) if not isinstance(c, tuple)]
# test_correctness and test_moe check every compiled case at every CPU shape (their cases come from the
# catalog); the sweep here adds what only `compiled` has, its graph breaks, at one shape per family:
# prefill, so attention's gradients are checked too, and the Zipf load, whose rare experts get 0 or 1
# rows. On 2 cores this file took 93 s with all 22 cases and inductor's caches empty, 68 s with these 11
# (12 s with the caches full).
SWEEP_SHAPES = ("tiny-s128", "tiny-moe-t64-zipf")


def _case(family_name, variant, shape):
    fam = family(family_name)
    return cases.Case(fam.name, variant, fam.implementation("compiled"), fam.shape(shape), "cpu")


def test_every_builtin_variant_has_a_compiled_case_at_every_cpu_shape():
    for fam in (family("attention"), family("moe")):
        cpu_shapes = [s for s in fam.shapes if s.device == "cpu"]
        assert len([c for c in COMPILED_CASES if c.family == fam.name]) == len(fam.variants) * len(cpu_shapes)


def test_compiled_moe_stops_where_its_expert_loop_took_minutes_to_compile_and_says_so():
    moe = family("moe")
    compiled = moe.implementation("compiled")
    router = moe.variants[0]
    assert compiled.unsupported(router, moe.shape("mixtral-8x7b-prefill-t8k-uniform")) is None
    why = compiled.unsupported(router, moe.shape("deepseek-v3-prefill-t4k-uniform"))
    assert "256 experts" in why and "300 s" in why


@pytest.mark.parametrize("case", [c for c in COMPILED_CASES if c.shape.name in SWEEP_SHAPES], ids=lambda c: c.name)
def test_every_builtin_variant_passes_check_compiled(case):
    """Forward, and gradients where the case has a backward. Attention compiles to one graph; the MoE
    reference breaks where `tolist()` sizes the experts' rows, and the check's line says so."""
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line
    if case.family == "attention":
        assert "graph breaks" not in result.line
        assert ("gradients dq" in result.line) == (cases.backward_unsupported(case) is None), result.line
    else:
        assert "via compiled (graph breaks: " in result.line
        assert "reference/moe.py:" in result.line and ".tolist()" in result.line, result.line


class LoggingCausal(AttentionVariant):
    """Causal attention whose mask also writes a line: a Python side effect dynamo cannot put in a graph."""

    log = io.StringIO()

    def mask_mod(self, problem):
        causal = super().mask_mod(problem)

        def logging_causal(b, h, q_idx, kv_idx):
            print("mask evaluated", file=LoggingCausal.log)
            return causal(b, h, q_idx, kv_idx)

        return logging_causal


def test_a_mask_dynamo_cannot_trace_is_compiled_with_graph_breaks_and_says_where():
    case = _case("attention", LoggingCausal("logging_causal", kv_heads="mha"), "tiny-s128")
    result = check_workers.check_one(case)
    assert result.status == "ok", result.line
    assert "via compiled (graph breaks: " in result.line
    assert "tests/test_compiled.py:" in result.line and 'print("mask evaluated"' in result.line, result.line
    assert "gradients dq" in result.line


@pytest.fixture
def failing_compiler(monkeypatch):
    """Inductor failing on every graph, as it does where no C++ compiler is installed."""

    def refuse(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr("torch._inductor.compile_fx.compile_fx", refuse)


def test_a_failing_compiler_is_a_skip_with_its_reason(failing_compiler):
    case = _case("attention", family("attention").variant("gqa_8"), "tiny-s128")
    result = check_workers.check_one(case)
    assert result.status == "skip", result.line
    assert result.line == ("skip      attention/gqa_8/compiled/tiny-s128: compiled cannot run gqa_8 at tiny-s128: "
                           "torch.compile fails: RuntimeError: no C++ compiler here")


def test_a_failing_compiler_is_an_asv_skip_in_the_suite(failing_compiler):
    from suite.bench_moe import MoEForward

    with pytest.raises(NotImplementedError, match="torch.compile fails: RuntimeError: no C"):
        MoEForward().setup("softmax_topk", "compiled", "tiny-moe-t64-uniform")


@pytest.mark.parametrize("family_name, variant, shape", [("attention", "document", "tiny-s128"),
                                                         ("moe", "softmax_topk", "tiny-moe-t64-uniform")])
def test_the_timed_inputs_run_what_prepare_compiled(family_name, variant, shape):
    """prepare_checked compiles on the check's inputs and then refills them with the timing seed's: the
    next call must compile nothing (for MoE, whose loop is traced with each expert's row count, that
    takes dynamic=True: the default compiled the loop again for the timed routing)."""
    case = _case(family_name, family(family_name).variant(variant), shape)
    _, call, _ = cases.prepare_checked(case)
    with torch.compiler.set_stance("fail_on_recompile"):
        call()
