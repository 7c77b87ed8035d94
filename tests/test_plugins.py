"""Plug-ins: a variant (or kernel) from a file outside the package works in every command like a built-in
one, is filed under its plug-in's content hash, and a broken plug-in is one line and exit 2."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from variantbench import plugins
from variantbench.cli import main

ROOT = Path(__file__).resolve().parent.parent

# The README's plug-in, at CPU size: WINDOW 32 differs from causal at tiny-s128's 128 positions.
SINKS = '''\
"""A sliding window with 4 attention-sink tokens, and a sigmoid top-k router: a variantbench plug-in."""

import torch

from variantbench.catalog.attention import AttentionVariant
from variantbench.catalog.moe import MoEVariant

SINKS, WINDOW = 4, {window}


def sink_window(b, h, q_pos, kv_pos):
    """Keys 0-3 are always visible, then the WINDOW keys up to the query itself (AND-ed with causal)."""
    return (kv_pos < SINKS) | (q_pos - kv_pos < WINDOW)


def sigmoid_topk(logits, config, selection_bias):
    """Sigmoid scores, the k best (ties to the lower index), their weights renormalised."""
    scores = torch.sigmoid(logits)
    weights, experts = torch.sort(scores, dim=-1, descending=True, stable=True)
    weights, experts = weights[:, :config.top_k], experts[:, :config.top_k]
    return experts, weights / weights.sum(-1, keepdim=True)


VARIANTS = (
    AttentionVariant("sink_window", mask=sink_window, note="4 sink keys and a causal window"),
    AttentionVariant("sliding_window_16", window=16, note="one key interval per query: our Triton kernel runs it"),
    MoEVariant("sigmoid_topk", router=sigmoid_topk, note="sigmoid scores, top-k, renormalised"),
)
'''


def write_plugin(folder: Path, name="sinks", text=None, window=32) -> Path:
    path = folder / f"{name}.py"
    path.write_text(SINKS.format(window=window) if text is None else text)
    return path


def tag(path: Path) -> str:
    return f"{path.stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(autouse=True)
def no_plugins_leak(monkeypatch):
    """A command sets VARIANTBENCH_PLUGINS (and PYTHONPATH and sys.path for a module) for itself and
    the processes it starts: monkeypatch puts back what a test's command leaves there (a variable set
    then deleted here is removed again at the end). The suite's modules, whose classes a command builds
    with the test's plug-ins when it lists the benchmarks, are put back too: left in sys.modules, they
    gave tests/test_catalog.py's grid test the plug-in's variants when it ran after this file."""
    for name in (plugins.ENV, "PYTHONPATH"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if name == plugins.ENV or not os.environ[name]:
            monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    kept = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "suite"}
    yield
    for name in [name for name in sys.modules if name.split(".")[0] == "suite"]:
        del sys.modules[name]
    sys.modules.update(kept)


@pytest.fixture
def sinks(tmp_path):
    return write_plugin(tmp_path)


def test_list_shows_the_plugin_variants_under_their_plugin_and_hash(sinks):
    result = invoke("list", "--plugin", sinks)
    assert result.exit_code == 0, result.output
    recorded = f"@{tag(sinks)}"
    assert f"plug-in {sinks} as {recorded}: sink_window, sliding_window_16, sigmoid_topk" in result.stderr
    attention, moe = result.stdout.split("family moe")
    row = next(line for line in attention.splitlines() if line.strip().startswith(f"sink_window{recorded}"))
    assert row.split()[1:5] == ["some", "yes", "yes", "no"]  # reference, sdpa, flex, triton
    assert f"sliding_window_16{recorded}" in attention and f"sigmoid_topk{recorded}" in moe
    assert "has its own mask function sink_window" in attention  # why triton cannot run it
    assert "router sigmoid_topk is a plug-in's" in moe


def test_the_plugin_mask_is_keys_0_to_3_and_a_causal_window_at_prefill_and_decode(sinks):
    """The plug-in's function is written on positions: checked pair by pair, and the work model counts
    exactly the pairs it lets through (not one interval per query, so not from key bounds)."""
    from variantbench.catalog import family
    from variantbench.catalog.attention import AttentionProblem, visible_pairs

    plugins.activate([str(sinks)])
    variant = family("attention").variant("sink_window")
    for q_len, kv_len in ((70, 70), (1, 90), (9, 90)):
        q, k = torch.randn(2, 4, q_len, 8), torch.randn(2, 2, kv_len, 8)
        problem = AttentionProblem(q, k, k, None, 0)
        qi, ki = torch.arange(q_len).view(1, 1, -1, 1), torch.arange(kv_len).view(1, 1, 1, -1)
        got = variant.mask_mod(problem)(torch.zeros(1, 1, 1, 1, dtype=torch.long), 0, qi, ki)[0, 0]
        want = torch.zeros(q_len, kv_len, dtype=torch.bool)
        for i in range(q_len):
            pos = i + kv_len - q_len
            for j in range(kv_len):
                want[i, j] = j <= pos and (j < 4 or pos - j < 32)
        assert torch.equal(got, want), (q_len, kv_len)
        assert visible_pairs(variant, problem) == 2 * int(want.sum())
    with pytest.raises(ValueError, match="not known to be one key interval"):
        variant.key_bounds(problem)


def test_check_passes_for_each_plugin_variant_and_triton_says_why_not_the_sink_window(sinks):
    result = invoke("check", "--plugin", sinks, "--variant", "sink_window", "--variant", "sliding_window_16",
                    "--variant", "sigmoid_topk", "--shape", "tiny-s128", "--shape", "tiny-moe-t64-uniform")
    assert result.exit_code == 0, result.output
    recorded = tag(sinks)
    ok = {line.split()[3] for line in result.output.splitlines() if line.startswith("[") and " ok " in line}
    for name in ("reference", "sdpa", "flex"):
        assert f"attention/sink_window@{recorded}/{name}/tiny-s128" in ok
    assert f"attention/sliding_window_16@{recorded}/triton/tiny-s128" in ok  # an interval: through the interpreter
    assert {f"moe/sigmoid_topk@{recorded}/{name}/tiny-moe-t64-uniform" for name in ("reference", "grouped_mm")} <= ok
    assert (f"skip      attention/sink_window@{recorded}/triton/tiny-s128: triton cannot run sink_window@{recorded} "
            f"at tiny-s128: our kernel runs masks that are one key interval per query") in result.output
    assert " 0 mismatched, 0 errors" in result.output


def test_editing_the_plugin_files_its_results_under_another_name(sinks):
    """Results are filed by the recorded name (the asv parameter): an edited plug-in is a new history."""
    from variantbench import cases

    plugins.activate([str(sinks)])
    before = cases.resolve("attention", "sink_window", "sdpa", "tiny-s128", "cpu").name
    assert before == f"attention/sink_window@{tag(sinks)}/sdpa/tiny-s128"
    write_plugin(sinks.parent, window=33)
    plugins.activate([str(sinks)])
    after = cases.resolve("attention", "sink_window", "sdpa", "tiny-s128", "cpu").name
    assert after == f"attention/sink_window@{tag(sinks)}/sdpa/tiny-s128" and after != before


def test_compare_and_gate_select_the_active_plugins_rows_not_an_edited_ones(sinks):
    """A typed name selects rows by the name the active plug-in records (runner.resolve's mapping):
    after the file is edited, the figures of its earlier `sink_window@sinks-<hash>` are another kernel's."""
    import pandas as pd

    from variantbench.runner import Selection, check_names
    from variantbench.selecting import RowSelection, checked

    plugins.activate([str(sinks)])
    before = f"sink_window@{tag(sinks)}"
    write_plugin(sinks.parent, window=33)
    plugins.activate([str(sinks)])
    now = f"sink_window@{tag(sinks)}"
    frame = pd.DataFrame({"benchmark": ["bench_attention.AttentionForward.time_forward"] * 3,
                          "params": [(before, "flex", "tiny-s128"), (now, "flex", "tiny-s128"),
                                     ("gqa_8", "flex", "tiny-s128")]})
    picked = RowSelection.of(check_names(Selection(variants=("sink_window",)))[0], None).rows(frame, ROOT)
    assert [params[0] for params in picked.params] == [now]
    assert checked(Selection(variants=("sink_window",)), None).variants == (now,)  # what gate and compare select


def test_asv_processes_see_the_plugin_grid_and_a_run_records_it(sinks, tmp_path, monkeypatch):
    """End to end through asv on the CPU: the suite's grid, built in asv's own processes from the
    environment the command set, has the plug-in's variant, and its figure is filed under its
    recorded name."""
    from variantbench import results

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    result = invoke("run", "--plugin", sinks, "--device", "cpu", "--variant", "sink_window", "--implementation",
                    "sdpa", "--shape", "tiny-s128", "--bench", r"AttentionForward\.time_forward$", "--results",
                    tmp_path / "results")
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "results").glob("cpu-*/*-*.json")
    frame = results.load_file(path)
    forward = frame[frame.benchmark == "bench_attention.AttentionForward.time_forward"]
    assert list(forward.params) == [(f"sink_window@{tag(sinks)}", "sdpa", "tiny-s128")]
    assert forward.value.iloc[0] > 0
    described = json.loads((tmp_path / "results" / "benchmarks.json").read_text())
    assert f"'sink_window@{tag(sinks)}'" in described["bench_attention.AttentionForward.time_forward"]["params"][0]


def test_a_fresh_process_importing_the_suite_builds_its_grid_with_the_plugins(sinks):
    plugins.activate([str(sinks)])
    code = "from suite.common import grid; print(grid('attention')[0][0][-2:], grid('moe')[0][0][-1])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([f"sink_window@{tag(sinks)}", f"sliding_window_16@{tag(sinks)}"]) + \
        f" sigmoid_topk@{tag(sinks)}"


def test_a_module_plugin_is_imported_by_name(tmp_path, monkeypatch):
    package = tmp_path / "mine"
    package.mkdir()
    (package / "__init__.py").write_text("")
    path = write_plugin(package, name="variants")
    monkeypatch.chdir(tmp_path)  # found as `python -m` finds a module: from the working directory
    result = invoke("list", "--plugin", "mine.variants", "--family", "attention")
    assert result.exit_code == 0, result.output
    assert f"sink_window@mine.variants-{tag(path).split('-')[1]}" in result.stdout
    assert str(tmp_path) in os.environ["PYTHONPATH"].split(os.pathsep)  # for the processes it starts


def test_the_working_directorys_pyproject_supplies_plugins_and_settings(sinks, monkeypatch):
    from variantbench import gate

    (sinks.parent / "pyproject.toml").write_text(
        '[tool.variantbench]\nplugins = ["sinks.py"]\nregression_factor = 1.05\n'
        '[tool.variantbench.budgets]\n"attention/sink_window" = 2.5\n')
    monkeypatch.chdir(sinks.parent)
    result = invoke("list", "--family", "attention")
    assert result.exit_code == 0, result.output
    assert f"sink_window@{tag(sinks)}" in result.stdout
    settings = gate.load_settings(ROOT / "pyproject.toml")
    assert settings.regression_factor == 1.05
    assert settings.budget_for("attention", f"sink_window@{tag(sinks)}") == 2.5  # by the name users type
    assert settings.budget_for("attention", "gqa_8") == 1.10  # the package's own, as the default


def test_a_command_started_by_one_keeps_its_plugin_list(sinks, monkeypatch, tmp_path):
    """VARIANTBENCH_PLUGINS set by the parent command is the whole list: the measuring run in another
    commit's checkout does not read that checkout's pyproject again."""
    (tmp_path / "pyproject.toml").write_text('[tool.variantbench]\nplugins = ["other.py"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(plugins.ENV, str(sinks))
    assert [p.source for p in plugins.activate()] == [str(sinks)]


# What a broken plug-in's one line says after `variantbench: plug-in PATH`.
BROKEN = {
    "fails to import": ("import torch\nraise RuntimeError('no GPU kernels here\\nsecond line')\n",
                        " failed to import: RuntimeError: no GPU kernels here"),
    "duplicate of a built-in": ("from variantbench.catalog.attention import AttentionVariant\n"
                                "VARIANTS = (AttentionVariant('gqa_8', kv_heads=8),)\n",
                                ": attention variant 'gqa_8' is already defined (built in)"),
    "unknown router": ("from variantbench.catalog.moe import MoEVariant\nVARIANTS = (MoEVariant('mine', 'top_p'),)\n",
                       " failed to import: ValueError: unknown MoE router 'top_p'; known: softmax_topk, "
                       "sigmoid_grouped_topk"),
    "unknown entry type": ("VARIANTS = ('sink_window',)\n",
                           ": VARIANTS[0] is of type str, not one of AttentionVariant, MLAVariant, LinearVariant, PagedVariant, MoEVariant, CommsVariant"),
    "implementation not a Kernel": ("from variantbench.catalog import Implementation\n"
                                    "IMPLEMENTATIONS = (Implementation('x', 'kernels.attention.sdpa', True, True),)\n",
                                    ": IMPLEMENTATIONS[0] is of type Implementation, not variantbench.plugins.Kernel"),
    "kernel for an unknown variant": ("from variantbench.plugins import Kernel\n"
                                      "IMPLEMENTATIONS = (Kernel('attention', 'k', print, variants=('gqa_9',)),)\n",
                                      ": kernel 'k' names unknown attention variant(s) 'gqa_9'; known: causal"),
    "a second baseline": ("from variantbench.catalog.attention import AttentionVariant\n"
                          "VARIANTS = (AttentionVariant('mine', baseline=True),)\n",
                          ": attention variant 'mine' sets baseline=True"),
    "nothing in it": ("X = 1\n", " defines neither VARIANTS nor IMPLEMENTATIONS"),
}


@pytest.mark.parametrize("case", BROKEN)
@pytest.mark.parametrize("command", ["list", "check"])
def test_a_broken_plugin_is_one_line_and_exit_2(case, command, tmp_path):
    text, says = BROKEN[case]
    path = write_plugin(tmp_path, "broken", text)
    result = invoke(command, "--plugin", path)
    assert result.exit_code == 2
    assert one_line(result).startswith(f"variantbench: plug-in {path}{says}")


def test_a_name_two_plugins_define_is_one_line_naming_both(sinks, tmp_path):
    again = write_plugin(tmp_path, "again")
    result = invoke("list", "--plugin", sinks, "--plugin", again)
    assert result.exit_code == 2
    assert one_line(result) == (f"variantbench: plug-in {again}: attention variant 'sink_window' is already defined "
                                f"(by plug-in {sinks})")


def test_a_missing_plugin_file_is_one_line(tmp_path):
    result = invoke("try", "--plugin", tmp_path / "nowhere.py", "gqa_8")
    assert result.exit_code == 2
    assert one_line(result) == f"variantbench: plug-in {tmp_path / 'nowhere.py'}: no such file"


def test_the_repositorys_example_plugins_list_and_their_candidate_checks():
    """tools/plugins: the README's sink window, and the forced-tile candidate kernel, judged by check."""
    examples = ROOT / "tools" / "plugins"
    listed = invoke("list", "--plugin", examples / "sinks.py", "--plugin", examples / "forced_tile.py")
    assert listed.exit_code == 0, listed.output
    assert "sink_window, sigmoid_topk" in listed.stderr and "triton_64x64 (attention)" in listed.stderr
    checked = invoke("check", "--plugin", examples / "forced_tile.py", "--variant", "causal",
                     "--implementation", "triton_64x64", "--shape", "tiny-s128", "--device", "cpu")
    assert checked.exit_code == 0, checked.output
    assert re.search(r"ok +attention/causal/triton_64x64@forced_tile-[0-9a-f]{8}/tiny-s128", checked.output)


SKEWED = '''\
"""A comms variant: an all-to-all whose rank 0 sends half of everything it has to rank 1 (a hot expert)."""

from variantbench.catalog.comms import CommsVariant


def hot_pair(seed, ranks, numel):
    rest = numel // 2 // (ranks - 1)
    return [[numel - rest * (ranks - 1) if dst == (src + 1) % ranks else rest for dst in range(ranks)]
            for src in range(ranks)]


VARIANTS = (CommsVariant("all_to_all_hot", "all_to_all", "(n-1)/n", algorithm_bytes="buffer", splits=hot_pair,
                         note="half of each rank's buffer to its neighbour"),)
'''


def test_a_comms_plugin_variant_reaches_the_ranks_and_checks_against_the_reference(tmp_path):
    """Each rank is its own process: the plug-in's splits function must reach it (VARIANTBENCH_PLUGINS)."""
    path = write_plugin(tmp_path, "hot", SKEWED)
    result = invoke("check", "--plugin", path, "--variant", "all_to_all_hot", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert re.search(rf"ok +comms/all_to_all_hot@{tag(path)}/nccl/comms-cpu-4k", result.output), result.output
