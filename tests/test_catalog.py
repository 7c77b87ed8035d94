"""The catalog is complete and consistent, and the asv suite covers it."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from variantbench.catalog import families
from variantbench.catalog.attention import FAMILY, AttentionVariant
from variantbench.shapes import in_tier

ROOT = Path(__file__).resolve().parent.parent


def test_names_are_unique_and_stable_strings():
    for fam in families():
        for items in (fam.variants, fam.implementations, fam.shapes):
            names = [x.name for x in items]
            assert len(names) == len(set(names))
            assert all(n == n.strip() and " " not in n for n in names)


@pytest.mark.parametrize("name, fields, says", [
    ("sliding_window_4096", {"window": 1024}, "window_4096 in its name means window=4096, but window=1024"),
    ("gqa_4", {"kv_heads": 8}, "gqa_4 in its name means kv_heads=4, but kv_heads=8"),
    ("gqa_4", {"kv_heads": "mha"}, "gqa_4 in its name means kv_heads=4, but kv_heads='mha'"),
    ("softcap_30", {"softcap": 50.0}, "softcap_30 in its name means softcap=30, but softcap=50.0"),
    ("prefix_lm_9", {"prefix": 8}, "prefix_lm_9 in its name means prefix=9, but prefix=8"),
    ("sliding_window_1024_softcap_50", {"window": 1024, "softcap": 30.0}, "softcap_50 in its name means softcap=50"),
    ("swa_512", {"window": 512}, "the number 512 in its name stands for no field"),
])
def test_a_number_in_an_attention_variant_name_must_be_the_field_it_names(name, fields, says):
    with pytest.raises(ValueError, match=f"AttentionVariant '{name}': {says}"):
        AttentionVariant(name, **fields)


def test_names_that_agree_with_their_fields_are_made():
    assert AttentionVariant("sliding_window_1024_softcap_50", window=1024, softcap=50.0).window == 1024
    assert AttentionVariant("softcap_2.5", softcap=2.5).softcap == 2.5
    assert AttentionVariant("mqa_window_9", kv_heads=1, window=9).window == 9
    assert AttentionVariant("sliding_window", window=64).window == 64  # a name with no number claims none


def test_the_reference_imports_nothing_of_the_harness():
    """reference/ is the oracle the catalog is checked against: reference/comms.py once imported the
    catalog's input drawing inside its prepare while the catalog imported it back (an import circle).
    A reference gets what it needs from the problem it is handed."""
    for path in sorted((ROOT / "reference").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("variantbench", "kernels") for n in names), f"{path.name}: {names}"


def test_exactly_one_baseline_and_it_is_fused(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    # a peer baseline (the linear family's fla-core) counts as installed: this checks the catalog
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: True if name == "fla" else real_find_spec(name))
    for fam in families():
        assert sum(v.baseline for v in fam.variants) == 1
        variant, impl = fam.baseline
        assert impl.fused
        monkeypatch.setattr("torch.cuda.device_count", lambda: 8)  # the comms baseline needs 2+ GPUs
        cuda_shapes = [s for s in fam.shapes if s.device == "cuda"]
        assert all(impl.unsupported(variant, s) is None for s in cuda_shapes)


def test_every_variant_has_a_reference_and_a_fused_implementation_somewhere():
    for fam in families():
        ref = fam.implementation("reference")
        assert not ref.fused
        for v in fam.variants:
            assert any(ref.unsupported(v, s) is None for s in fam.shapes), v.name
            assert any(i.fused and i.unsupported(v, s) is None for i in fam.implementations for s in fam.shapes)


def test_issue_shapes_exist():
    names = {s.name for s in FAMILY.shapes}
    assert {"llama-3-8b-s1k", "llama-3-8b-s4k", "llama-3-8b-s16k", "llama-3-70b-s4k"} <= names
    assert any(s.q_len == 1 and s.device == "cuda" for s in FAMILY.shapes)


def test_gpu_shapes_do_not_fit_in_l2():
    """No L2 flush is needed because every GPU shape's inputs exceed twice the largest L2 we run on
    (H200: 60 MB); a smaller shape must add input rotation first."""
    for s in FAMILY.shapes:
        if s.device != "cuda":
            continue
        c = s.config
        kv_bytes = 2 * s.batch * c.n_kv_heads * s.kv_len * c.head_dim * 2
        q_bytes = s.batch * c.n_heads * s.q_len * c.head_dim * 2
        assert kv_bytes + q_bytes > 2 * 60e6, s.name


def test_every_family_has_its_suite_module_and_benchmark_classes():
    """A family without suite/bench_<family>.py is never timed by asv, however well it checks."""
    import importlib

    from suite.common import ForwardBenchmark, MetricsBenchmark, PowerBenchmark

    for fam in families():
        module = importlib.import_module(f"suite.bench_{fam.name}")
        classes = [c for c in vars(module).values() if isinstance(c, type) and getattr(c, "family", None) == fam.name]
        for kind in (ForwardBenchmark, MetricsBenchmark, PowerBenchmark):
            assert any(issubclass(c, kind) for c in classes), (fam.name, kind.__name__)


def test_suite_grid_covers_every_variant_implementation_and_device_shape():
    from suite.bench_attention import AttentionForward

    variants, impls, shapes = AttentionForward.params
    assert variants == [v.name for v in FAMILY.variants if in_tier(v, "default")]  # mqa, causal nightly
    # the default tier's fused implementations: compiled and Flex are nightly; the reference is no
    # point of the grid (every setup would skip it)
    assert impls == ["sdpa", "triton"]
    assert shapes == [s.name for s in FAMILY.shapes if s.device == "cpu" and in_tier(s, "default")]


def test_the_grid_leaves_the_reference_out_even_where_named(monkeypatch):
    from suite import common

    monkeypatch.setattr(common, "TIER", "full")
    assert "reference" not in common.grid("attention")[0][1]
    monkeypatch.setattr(common, "ONLY_IMPLEMENTATIONS", ["reference", "sdpa"])
    assert common.grid("attention")[0][1] == ["sdpa"]


def test_compiled_joins_the_full_tier_or_where_it_is_named(monkeypatch):
    """torch.compile in every asv process (10-30 s each) does not fit the default tier's 10 minutes."""
    from suite import common

    monkeypatch.setattr(common, "TIER", "full")
    assert "compiled" in common.grid("attention")[0][1]
    monkeypatch.setattr(common, "TIER", "default")
    assert "compiled" not in common.grid("attention")[0][1]
    monkeypatch.setattr(common, "ONLY_IMPLEMENTATIONS", ["compiled"])
    assert common.grid("attention")[0][1] == ["compiled"]


def test_mha_and_mqa_are_nightly_unless_named(monkeypatch):
    """The default tier left mqa (0318851's took 599 s of its 10 minutes on an H200) and causal MHA
    (3311c6e's took 615 s) to the full one: gqa_8's kernels at 1 and 32 KV heads. Named, either runs at
    any tier, in the suite's grid and in `run`'s cases."""
    from suite import common
    from variantbench import cases

    def variants(tier, named=None):
        return {c.variant.name for c in cases.iter_cases("attention", "cuda", variants=named, tier=tier)
                if isinstance(c, cases.Case)}

    assert not {"mqa", "causal"} & variants("default") and "gqa_8" in variants("default")
    assert {"mqa", "causal"} <= variants("full") and variants("default", named=["mqa", "causal"]) == {"mqa", "causal"}
    monkeypatch.setattr(common, "TIER", "default")
    assert not {"mqa", "causal"} & set(common.grid("attention")[0][0])
    monkeypatch.setattr(common, "ONLY_VARIANTS", ["causal"])
    assert common.grid("attention")[0][0] == ["causal"]


@pytest.mark.parametrize("family_name, variant, implementation", [
    ("attention", "full", None), ("moe", "sigmoid_grouped_topk", None), ("paged", None, "flex")])
def test_what_left_the_default_tier_for_its_ten_minutes_runs_nightly_or_named(family_name, variant, implementation):
    """75ceccd's default tier took 643 s alone on an H200: bidirectional attention, DeepSeek-V3's router
    at Mixtral's shapes and paged Flex went to the full tier. Named, each runs in a default run."""
    from variantbench import cases

    def ran(tier, **named):
        return {(c.variant.name, c.implementation.name) for c in cases.iter_cases(family_name, "cuda", tier=tier, **named)
                if isinstance(c, cases.Case)}

    def has(pairs):
        return any((variant is None or v == variant) and (implementation is None or i == implementation) for v, i in pairs)

    named = {"variants": [variant]} if variant else {"implementations": [implementation]}
    assert not has(ran("default")) and has(ran("full")) and has(ran("default", **named))


def test_token_level_sparse_attention_waits_for_the_default_tier():
    """dsa_topk_2048 through the interpreter was 119 s of the CPU quick run's 347: a first look runs
    without it; every commit's run (default) and a run naming it have it."""
    from variantbench import cases

    def variants(device, tier):
        return {c.variant.name for c in cases.iter_cases("attention", device, tier=tier) if isinstance(c, cases.Case)}

    assert "dsa_topk_2048" not in variants("cpu", "quick") and "block_topk_16" in variants("cpu", "quick")
    assert "dsa_topk_2048" in variants("cpu", "default") and "dsa_topk_2048" in variants("cuda", "default")


def test_asv_check_passes():
    out = subprocess.run(
        [sys.executable, "-m", "asv", "check", "--python=same"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout


def test_suite_imports_the_code_of_its_own_checkout(tmp_path):
    """asv leaves sys.path alone; with another variantbench importable first (a decoy on PYTHONPATH
    here, another checkout's install in life), the suite must still import the one beside it."""
    decoy = tmp_path / "variantbench"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("")
    code = (
        "import importlib.util;"
        f"spec = importlib.util.spec_from_file_location('suite', r'{ROOT / 'suite' / '__init__.py'}');"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module);"
        "import variantbench; print(variantbench.__file__)"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith(str(ROOT / "variantbench"))


def test_autotuners_and_collectives_are_checked_alone_and_the_rest_side_by_side():
    from variantbench.catalog import family

    assert family("comms").implementation("nccl").runs_alone  # every case takes every GPU
    assert family("attention").implementation("triton").runs_alone  # it times configs while tuning
    assert not family("attention").implementation("sdpa").runs_alone
    assert not family("attention").implementation("flex").runs_alone
