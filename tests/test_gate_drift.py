"""tools/gate_drift.py: the `same` rows of committed gate summaries read as A/A pairs, on synthetic summaries."""

import math
import sys
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import gate_drift as tool  # noqa: E402

TABLE = """| benchmark | params | verdict | ratio | noise (se of log ratio) | between-run sigma (A/A pairs) |
|---|---|---|---|---|---|
| bench_attention.AttentionForward.time_forward | alibi/triton/llama-3-8b-s4k | same | {a} | 0.66% | none |
| bench_attention.AttentionForward.time_forward | causal/triton/llama-3-8b-s4k | faster | 0.935 | 0.6% | none |
| bench_attention.AttentionForward.time_forward | document/triton/llama-3-8b-s4k | same | {b} | 1.30% | none |
| bench_moe.MoEForward.time_forward | dsv3/ours/prefill | slower | 1.200 | 1.0% | none |
"""


def test_only_same_rows_are_read():
    assert tool.same_ratios(TABLE.format(a="1.020", b="0.990")) == [1.020, 0.990]


def test_a_suspect_the_confirming_re_run_cleared_is_left_out():
    cleared = ("Suspects the confirming re-run cleared: bench_attention.AttentionForward.time_forward "
               "document/triton/llama-3-8b-s4k, bench_moe.MoEForward.time_forward dsv3/ours/prefill.\n\n")
    assert tool.same_ratios(cleared + TABLE.format(a="1.020", b="1.040")) == [1.020]
    assert tool.same_ratios("Regression verdicts: same 6.\n| same | a | slower | 1.5 |\n") == []


def test_the_pool_and_each_gate_s_own_mean():
    found = tool.drift({"one.md": [1.02, 1.04], "two.md": [0.99], "even.md": [1.0], "none.md": []})
    assert found["gates"] == 3 and found["rows"] == 4 and found["gates_above"] == 1  # an even gate is not above
    assert math.isclose(found["mean_log"], (math.log(1.02) + math.log(1.04) + math.log(0.99)) / 4)
    assert math.isclose(found["median_ratio"], math.sqrt(1.02))
    assert tool.drift({"none.md": []}) is None


def test_the_command_reads_the_summaries_and_a_file_without_rows_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a.md").write_text(TABLE.format(a="1.010", b="1.030"))
    (tmp_path / "b.md").write_text("no table here\n")
    run = CliRunner().invoke(tool.main, [str(tmp_path / "a.md")])
    assert run.exit_code == 0
    assert run.output == ("2 same rows in 1 gates: HEAD / BASE mean log ratio +1.98%, median ratio 1.0200; "
                          "1 of 1 gates' own mean above 1\n")
    run = CliRunner().invoke(tool.main, [str(tmp_path / "b.md")])
    assert run.exit_code == 2
    assert run.output.strip().splitlines() == ["gate_drift.py: no `same` row in 1 gate summaries"]
