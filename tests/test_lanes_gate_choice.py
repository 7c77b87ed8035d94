"""The lease scripts spend a gate (about 200 s of a session's 1800 on the lent GPU) only on a branch whose probe
read at least 1% under main's in the same lease (tools/lanes.sh: under_main, fwd_gate_fastest): the choice read
from synthetic probe logs, the gate itself replaced by an echo."""

import shutil
import subprocess
from pathlib import Path

import pytest

LANES = Path(__file__).resolve().parents[1] / "tools" / "lanes.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the lease scripts are bash")


def _probe_log(root, branch, ms, graph_ms=None):
    """A gluon_probe log of the document forward as tools/probe_gluon_forward.py prints it (with --graph, each
    call's CUDA-graph line after the do_bench ones)."""
    (root / "one").mkdir(parents=True, exist_ok=True)
    graph = "" if graph_ms is None else (
        "  document   ours (Triton)    0.5800 ms    287 TFLOP/s  (CUDA graph)\n"
        f"  document   gluon            {graph_ms:.4f} ms    {172.6 / graph_ms:3.0f} TFLOP/s  (CUDA graph)\n")
    (root / "one" / f"gluon-probe-{branch}-document.log").write_text(
        "  document   ours (Triton)  max diff from ours (Triton) 0.00e+00\n"
        "  document   gluon          max diff from ours (Triton) 7.81e-03\n"
        "  document   ours (Triton)    0.5700 ms    292 TFLOP/s\n"
        f"  document   gluon            {ms:.4f} ms    {172.6 / ms:3.0f} TFLOP/s\n" + graph)


def _gated(root, *branches):
    script = (f'root={root}; source {LANES}; fwd_gate() {{ echo "GATED $1"; }}; '
              f'fwd_gate_fastest document {" ".join(branches)}')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False).stdout
    return [line.split()[1] for line in out.splitlines() if line.startswith("GATED")]


def test_the_fastest_branch_at_least_1_percent_under_main_is_gated_alone(tmp_path):
    _probe_log(tmp_path, "main", 0.4000)
    for branch, ms in (("near", 0.3970), ("fast", 0.3900), ("faster", 0.3850), ("slow", 0.4100)):
        _probe_log(tmp_path, branch, ms)
    assert _gated(tmp_path, "near", "fast", "faster", "slow") == ["faster"]
    assert _gated(tmp_path, "fast", "near") == ["fast"]


def test_no_gate_where_no_branch_reads_1_percent_under_main_or_a_log_is_missing(tmp_path):
    _probe_log(tmp_path, "main", 0.4000)
    _probe_log(tmp_path, "near", 0.3970)  # 0.75% under: within a probe's noise
    assert _gated(tmp_path, "near") == []
    assert _gated(tmp_path, "absent") == []


def test_the_choice_reads_do_bench_not_a_graph_lines_tflops(tmp_path):
    """With --graph the last gluon line is the CUDA graph's, whose fourth field from the end is TFLOP/s: read as
    ms, a faster branch (more TFLOP/s) looked slower."""
    _probe_log(tmp_path, "main", 0.4000, graph_ms=0.4200)
    _probe_log(tmp_path, "fast", 0.3850, graph_ms=0.4050)
    assert _gated(tmp_path, "fast") == ["fast"]
