"""tools/moe_expert_bound.py's power-cap floor: a layer's FLOPs and bytes each at their peak's energy above
idle, within the cap's headroom above idle."""

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
from moe_expert_bound import power_floor  # noqa: E402


def test_peaks_that_each_draw_the_cap_add_their_times():
    assert power_floor(3.0, 5.0, 700, 700, 80, 700) == pytest.approx(8.0)


def test_peaks_that_draw_less_leave_room_for_both_at_once():
    # each peak at half the headroom above idle: the two fit under the cap together
    assert power_floor(3.0, 5.0, 390, 390, 80, 700) == pytest.approx(4.0)
    assert power_floor(3.0, 5.0, 700, 390, 80, 700) == pytest.approx(5.5)


def test_watts_given_in_part_are_one_usage_line():
    result = subprocess.run([sys.executable, str(TOOLS / "moe_expert_bound.py"), "--matmul-watts", "690"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "give --matmul-watts, --copy-watts and --idle-watts" in result.stderr
