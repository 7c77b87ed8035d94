"""tools/moe_expert_bound.py's power-cap floor: a layer's FLOPs and bytes each at the energy its peak spends
above idle (and above a fixed cost of being busy), within the cap's headroom."""

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
from moe_expert_bound import power_floor  # noqa: E402

MATMUL, COPY = (1e15, 700.0), (5e12, 700.0)  # each peak draws the cap


def test_peaks_that_each_draw_the_cap_add_their_times():
    # 3e12 FLOPs take 3 ms at the matmul peak, 25e9 bytes 5 ms at the copy peak: 8 ms under the cap together
    assert power_floor(3e12, 25e9, MATMUL, COPY, 100, 0, 700) == pytest.approx(8e-3)


def test_peaks_under_the_cap_leave_room_for_both_at_once():
    # each peak at half the headroom above idle: the two fit under the cap together
    assert power_floor(3e12, 25e9, (1e15, 400.0), (5e12, 400.0), 100, 0, 700) == pytest.approx(4e-3)


def test_a_fixed_cost_of_being_busy_lowers_the_floor_where_a_peak_draws_under_the_cap():
    # busy takes 300 of the 600 W above idle: with both peaks at the cap, 3 ms x 300 W + 5 ms x 300 W over 300 W
    # of headroom, the same; with the copy at 400 W its bytes cost nothing more than being busy (the tool then
    # prints the roofline, 5 ms, which is the higher)
    assert power_floor(3e12, 25e9, MATMUL, COPY, 100, 300, 700) == pytest.approx(8e-3)
    assert power_floor(3e12, 25e9, (1e15, 700.0), (5e12, 400.0), 100, 0, 700) == pytest.approx(5.5e-3)
    assert power_floor(3e12, 25e9, (1e15, 700.0), (5e12, 400.0), 100, 300, 700) == pytest.approx(3e-3)


@pytest.mark.parametrize("arguments", [["--matmul-peak", "677,688"], ["--matmul-peak", "677"],
                                       ["--matmul-peak", "677,688", "--copy-peak", "4.29,617", "--idle-watts", "77",
                                        "--busy-watts", "700"]],
                         ids=["in-part", "not-a-pair", "busy-over-the-peaks"])
def test_bad_power_arguments_are_one_usage_line(arguments):
    result = subprocess.run([sys.executable, str(TOOLS / "moe_expert_bound.py"), *arguments],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("usage:")
    assert result.stderr.strip().splitlines()[-1].startswith("moe_expert_bound.py: error:")
