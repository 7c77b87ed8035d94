"""The GPU job scripts' steps (tools/budgeted.sh): each under its time limit, skipped past the job's budget, and
a repeated step name keeps every earlier log (NAME.log.1, .2, ...) with the latest at NAME.log."""

import shutil
import subprocess
from pathlib import Path

import pytest

BUDGETED = Path(__file__).resolve().parents[1] / "tools" / "budgeted.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="the job scripts are bash with coreutils' timeout")


def _job(dest, steps, budget=60):
    script = f'dest={dest} budget={budget} show=figure; source {BUDGETED}; {steps}'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False).stdout


def test_a_repeated_step_name_keeps_every_earlier_log(tmp_path):
    out = _job(tmp_path, "step probe 20 echo figure 1; step probe 20 echo figure 2; step probe 20 echo figure 3")
    assert (tmp_path / "probe.log").read_text() == "figure 3\n"
    assert (tmp_path / "probe.log.1").read_text() == "figure 1\n"
    assert (tmp_path / "probe.log.2").read_text() == "figure 2\n"
    assert out.count("== probe: exit 0") == 3 and "figure 2" in out


def test_a_step_past_the_budget_is_skipped_and_a_failing_one_returns_its_code(tmp_path):
    out = _job(tmp_path, 'step late 200 echo figure; echo "late $?"; step bad 20 false; echo "bad $?"', budget=60)
    assert "== late: skipped" in out and "late 3" in out and not (tmp_path / "late.log").exists()
    assert "bad 1" in out
