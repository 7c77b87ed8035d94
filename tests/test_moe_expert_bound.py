"""tools/moe_expert_bound.py's power-cap floor: a layer's FLOPs and bytes each at their peak's energy above
idle, within the cap's headroom above idle."""

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
from moe_expert_bound import power_floor  # noqa: E402


def test_the_floor_is_the_work_energy_over_the_headroom_above_idle():
    # 1e12 FLOPs at 1 pJ and 1e9 bytes at 100 pJ: 1.1 J over 700 - 150 W
    assert power_floor(1e12, 1e9, 1.0, 100.0, 150, 700) == pytest.approx(1.1 / 550)
    assert power_floor(1e12, 0, 1.0, 100.0, 150, 700) == pytest.approx(1.0 / 550)


def test_peaks_that_each_draw_the_cap_add_their_times():
    # a matmul peak of 1e15 FLOP/s and a copy peak of 5e12 B/s, each drawing the cap (700 W, 100 idle)
    pj_flop, pj_byte = 600 / 1e15 * 1e12, 600 / 5e12 * 1e12
    assert power_floor(3e12, 25e9, pj_flop, pj_byte, 100, 700) == pytest.approx(3e-3 + 5e-3)


def test_watts_given_in_part_are_one_usage_line():
    result = subprocess.run([sys.executable, str(TOOLS / "moe_expert_bound.py"), "--pj-flop", "0.9"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "give --pj-flop, --pj-byte and --idle-watts" in result.stderr
