"""`variantbench try`: one variant's verdict against A in one command, on the CPU: checked, timed side by
side with A, decided against the budget; a wrong candidate kernel is named and never timed."""

import json
from dataclasses import replace as dataclass_replace

import pytest
import torch
from test_plugins import invoke, no_plugins_leak, one_line, tag, write_plugin  # noqa: F401 - the fixture is used

from variantbench import budget, trying

CANDIDATES = '''\
"""Candidate kernels for gqa_8: a wrong forward, a right forward with a wrong backward, one that raises."""

import torch

from kernels.attention import sdpa
from variantbench.plugins import Kernel


def scaled(variant, problem):
    call = sdpa.prepare(variant, problem)
    return lambda: call() * 1.01


class WrongGradient(torch.autograd.Function):
    """The identity forward; its backward scales the gradient by 1.01."""

    @staticmethod
    def forward(ctx, out):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.01


def wrong_backward(variant, problem):
    call = sdpa.prepare(variant, problem)
    return lambda: WrongGradient.apply(call())


def raising(variant, problem):
    raise RuntimeError("no kernel for this head dim\\nsecond line")


IMPLEMENTATIONS = tuple(
    Kernel("attention", name, prepare, variants=("gqa_8",), backward=backward)
    for name, prepare, backward in {kernels}
)
'''


def candidates(folder, kernels):
    return write_plugin(folder, "candidates", CANDIDATES.format(kernels=kernels))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A research project's folder: the sink-window plug-in, and a pyproject naming it with its budget."""
    write_plugin(tmp_path)

    def with_budget(value):
        (tmp_path / "pyproject.toml").write_text(f'[tool.variantbench]\nplugins = ["sinks.py"]\n'
                                                 f'[tool.variantbench.budgets]\n"attention/sink_window" = {value}\n')
        return tmp_path

    monkeypatch.chdir(tmp_path)
    return with_budget


def test_try_json_is_one_well_formed_verdict_under_the_projects_budget(project):
    """From the project's folder: its pyproject names the plug-in and sets the variant's budget (1000:
    within, whatever the CPU's timings). stdout is the JSON document alone; the table goes to stderr."""
    folder = project(1000.0)
    result = invoke("try", "sink_window", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    recorded = f"sink_window@{tag(folder / 'sinks.py')}"
    assert (doc["family"], doc["variant"], doc["against"], doc["device"]) == ("attention", recorded, "gqa_8", "cpu")
    assert doc["budget"] == 1000.0 and doc["verdict"] == "within" and doc["exit_code"] == 0
    assert doc["figures"].startswith("CPU figures at CPU-sized shapes; triton through the Triton interpreter")
    (shape,) = doc["shapes"]
    assert shape["shape"] == "tiny-s128" and shape["verdict"] == "within"
    rows = {row["implementation"]: row for row in shape["implementations"]}
    assert list(rows)[:4] == ["reference", "sdpa", "flex", "triton"]
    assert rows["triton"]["status"] == "skip" and "one key interval per query" in rows["triton"]["reason"]
    assert rows["triton"]["ms"] is None and rows["triton"]["verdict"] is None
    timed = [row for row in rows.values() if row["status"] == "ok"]
    assert {"reference", "sdpa", "flex"} <= {row["implementation"] for row in timed}
    for row in timed:
        assert row["ms"] > 0 and row["ratio"] > 0 and row["time_ratio"] > 0 and row["standard_error"] >= 0
        assert 0 < row["percent_of_peak"] and row["max_error"] <= row["tolerance"]
        assert row["verdict"] == (None if not row["fused"] else "within")
    fastest = min((row for row in timed if row["fused"]), key=lambda row: row["ratio"])
    assert shape["fastest"] == fastest["implementation"]
    against = shape["against"]
    assert against["variant"] == "gqa_8" and against["ms"] == min(i["ms"] for i in against["implementations"])
    # A's side is its default tier's fused implementations: Flex and compiled are nightly
    assert {i["implementation"] for i in against["implementations"]} == {"sdpa", "triton"}
    # the same answer for people: progress and the table, on stderr
    assert "[tiny-s128] timing" in result.stderr and "verdict: within: fastest fused" in result.stderr


def test_a_wrong_or_raising_candidate_kernel_for_gqa_8_is_named_never_timed_and_exit_1(tmp_path, monkeypatch):
    """Forward wrong, or forward right and gradients wrong: each is a mismatch naming the candidate; one
    that raises is one line. The built-in implementations are still timed, the family's best against
    itself at exactly 1. Wrong decides the exit over crashed (see the exit-code test below)."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # our kernel left out here: 5 s of interpreted calls
    path = candidates(tmp_path, '(("scaled", scaled, False), ("wrong_backward", wrong_backward, True), '
                                '("raising", raising, False))')
    result = invoke("try", "--plugin", path, "gqa_8", "--json", tmp_path / "verdict.json")
    assert result.exit_code == 1, result.output
    for name, what in (("scaled", "max error"), ("wrong_backward", "gradient d")):
        assert f"MISMATCH attention/gqa_8/{name}@{tag(path)}/tiny-s128: {what}" in result.output
    raised = [line for line in result.output.splitlines() if "ERROR" in line]
    assert raised == [f"  ERROR    attention/gqa_8/raising@{tag(path)}/tiny-s128: RuntimeError: no kernel for this "
                      "head dim"]
    assert "second line" not in result.output and "Traceback" not in result.output
    doc = json.loads((tmp_path / "verdict.json").read_text())
    rows = {row["implementation"]: row for row in doc["shapes"][0]["implementations"]}
    for name, status in (("scaled", "wrong"), ("wrong_backward", "wrong"), ("raising", "error")):
        row = rows[f"{name}@{tag(path)}"]
        assert row["status"] == status and row["ms"] is None and row["ratio"] is None and row["verdict"] is None
    best = doc["shapes"][0]["against"]["implementation"]
    assert rows[best]["ratio"] == 1.0 and doc["verdict"] == "wrong"


def test_no_fused_implementation_of_a_at_the_shape_is_exit_3(tmp_path, monkeypatch):
    """A = gqa_3: tiny's 16 query heads do not split into 3 KV heads, so A has nothing to time."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    path = write_plugin(tmp_path, "odd", "from variantbench.catalog.attention import AttentionVariant\n"
                                         "VARIANTS = (AttentionVariant('gqa_3', kv_heads=3),)\n")
    result = invoke("try", "--plugin", path, "mqa", "--against", "gqa_3", "--json", "-")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "no baseline" and doc["shapes"][0]["against"]["implementation"] is None
    assert f"gqa_3@{tag(path)} does not fit tiny-s128: " in result.stderr
    assert "16 query heads do not split into 3 KV heads" in result.stderr


@pytest.mark.parametrize("args, says", [
    (["nothing_like_it"], "unknown variant 'nothing_like_it'; known: attention: causal, gqa_8"),
    (["gqa_8", "--against", "softmax_topk"], "unknown attention variant 'softmax_topk'; known: causal"),
    (["gqa_8", "--shape", "llama-3-8b-s4k"], "shape llama-3-8b-s4k belongs to the cuda grid, not cpu"),
    (["gqa_8", "--shape", "tiny-moe-t64-uniform"], "unknown attention shape 'tiny-moe-t64-uniform'"),
    (["gqa_8", "--json", "/no/such/folder/verdict.json"], "--json /no/such/folder/verdict.json: no folder"),
])
def test_bad_input_is_one_line_and_exit_2(args, says):
    result = invoke("try", *args)
    assert result.exit_code == 2
    assert one_line(result).startswith(f"variantbench: {says}")


def _at(verdict, statuses=("ok",), best=True):
    tried = [trying.Tried(implementation=None, status=s) for s in statuses]
    return trying.AtShape(shape=None, mine=tried, best=object() if best else None, verdict=verdict)


@pytest.mark.parametrize("shapes, code, verdict", [
    ([_at("within"), _at("at budget")], 0, "at budget"),
    ([_at("within"), _at("over budget")], 1, "over budget"),
    ([_at("failed")], 1, "failed"),
    ([_at("within", best=False)], 3, "no baseline"),
    ([_at("over budget", ("ok", "error"))], 2, "crashed"),
    ([_at("within", ("error",), best=False), _at("within", ("wrong",))], 1, "wrong"),
])
def test_the_exit_code_puts_wrong_before_crashed_before_no_baseline_before_the_budget(shapes, code, verdict):
    assert trying.exit_code(shapes) == (code, verdict)
    assert set(trying.VERDICT_EXITS) == set(budget.VERDICTS)  # every budget verdict has its exit


def test_the_budget_decides_each_fused_ratio_and_the_fastest_decides_the_variant():
    """`decide` with the project's budget for the variant (by its typed name): Bonferroni over every
    ratio of the command, B's verdict at a shape is its lowest ratio's."""
    from types import SimpleNamespace

    from variantbench.gate import Settings

    def tried(name, ratio, fused=True):
        figures = {"ratio_to_baseline": ratio, "ratio_standard_error": 0.01}
        return trying.Tried(SimpleNamespace(name=name, fused=fused), figures=figures)

    fam, variant = SimpleNamespace(name="attention"), SimpleNamespace(name="sink_window@sinks-0123abcd")
    shapes = [trying.AtShape("s1", [tried("reference", 9.0, fused=False), tried("sdpa", 1.6), tried("flex", 1.3)]),
              trying.AtShape("s2", [tried("sdpa", 1.21), tried("flex", 1.5)])]
    settings = Settings(budget=1.1, variant_budget={"attention/sink_window": 1.2})
    assert trying.decide(shapes, settings, fam, variant) == 1.2
    assert [t.verdict for t in shapes[0].mine] == [None, "over budget", "over budget"]
    assert (shapes[0].fastest.implementation.name, shapes[0].verdict) == ("flex", "over budget")
    # 1.21 over 1.2 is 0.8 standard errors: over, not significantly
    assert (shapes[1].fastest.implementation.name, shapes[1].verdict) == ("sdpa", "at budget")
    assert trying.exit_code([dataclass_replace(s, best=object()) for s in shapes]) == (1, "over budget")
    settings = Settings(variant_budget={"attention/sink_window": 2.0})
    trying.decide(shapes, settings, fam, variant)
    assert [s.verdict for s in shapes] == ["within", "within"]


def test_a_variant_of_another_family_is_judged_at_its_own_shape():
    """MLA against attention's gqa_8: the ratio per useful work from each family's own work model (the
    MLA call's FLOPs differ from gqa_8's at any shape), the wall-time ratio as the calls are."""
    from variantbench.catalog import family
    from variantbench.metrics import Side

    result = invoke("try", "mla", "--against", "attention/gqa_8@tiny-s128", "--device", "cpu", "--json", "-")
    assert result.exit_code in (0, 1), result.output
    document = json.loads(result.stdout)
    assert document["against"] == "attention/gqa_8@tiny-s128"
    shape = document["shapes"][0]
    assert shape["shape"] == "tiny-mla-s80" and shape["against"]["implementation"] in ("sdpa", "flex", "triton")
    sdpa = next(row for row in shape["implementations"] if row["implementation"] == "sdpa")
    assert sdpa["ratio"] is not None and sdpa["time_ratio"] == pytest.approx(sdpa["ms"] / shape["against"]["ms"])
    # a side judged beside another family's keeps its own work model
    attention, mla = family("attention"), family("mla")
    problem = attention.make_problem(attention.variant("gqa_8"), attention.shape("tiny-s128"), device="cpu",
                                     dtype=torch.float32, seed=0)
    side = Side(attention.variant("gqa_8"), problem, None, work=attention.work)
    peaks = {"tflops": 1.0, "gbps": 1.0}
    assert side.floor_ms(mla.work, peaks) == Side(attention.variant("gqa_8"), problem, None).floor_ms(attention.work, peaks)


def test_another_familys_variant_without_its_shape_is_one_line_and_exit_2():
    result = invoke("try", "mla", "--against", "attention/gqa_8", "--device", "cpu")
    assert result.exit_code == 2
    assert "say which, as attention/gqa_8@SHAPE" in one_line(result)
