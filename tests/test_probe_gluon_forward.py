"""tools/probe_gluon_forward.py's arguments, on the CPU: an unknown variant is one line and exit 2 before any
GPU work (session 40's lease asked it for gqa_8 and got a KeyError's traceback after timing the variant before it)."""

import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parent.parent / "tools"
sys.path.insert(0, str(TOOLS))
import probe_gluon_forward  # noqa: E402


def test_unknown_names_every_stray_and_the_known():
    line = probe_gluon_forward.unknown(["causal", "gqa_8", "document", "foo"])
    assert line.startswith("probe_gluon_forward.py: no variant gqa_8, foo; known: ")
    assert all(name in line.split("known: ")[1].split() for name in probe_gluon_forward.VARIANTS)
    assert "\n" not in line


def test_known_names_and_none_pass():
    assert probe_gluon_forward.unknown(list(probe_gluon_forward.VARIANTS)) is None
    assert probe_gluon_forward.unknown([]) is None


def test_an_unknown_variant_exits_2_with_one_line_and_no_traceback():
    run = subprocess.run([sys.executable, str(TOOLS / "probe_gluon_forward.py"), "--graph", "causal", "gqa_8"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [probe_gluon_forward.unknown(["gqa_8"])]
    assert run.stdout == ""


def test_rounds_are_parsed_and_a_bad_count_is_one_line():
    parse = probe_gluon_forward.arguments
    assert parse(["--rounds", "5", "causal", "--graph"]) == ((["causal"], True, 5), None)
    assert parse([]) == ((list(probe_gluon_forward.VARIANTS), False, 1), None)
    for bad in (["--rounds", "0"], ["--rounds", "x", "causal"], ["--rounds"]):
        parsed, why = parse(bad)
        assert parsed is None and why.startswith("probe_gluon_forward.py: --rounds takes") and "\n" not in why
    assert parse(["--rounds", "3", "gqa_8"])[1] == probe_gluon_forward.unknown(["gqa_8"])


def test_a_bad_round_count_exits_2_before_any_gpu_work():
    run = subprocess.run([sys.executable, str(TOOLS / "probe_gluon_forward.py"), "--rounds", "0", "causal"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1 and run.stdout == ""


def _drifting_rounds():
    """Three rounds in which every call runs 5% slower than the round before (a warming GPU): gluon softcap_50
    costs 1.06x gluon causal a visible pair, the documents (a quarter of causal's pairs) 1.2x."""
    drift = [1.0, 1.05, 1.1025]
    flops = {"causal": 4.0, "softcap_50": 4.0, "document": 1.0}
    times = {("causal", "sdpa (cuDNN)"): [0.95 * d for d in drift], ("causal", "gluon"): [0.93 * d for d in drift],
             ("softcap_50", "gluon"): [0.93 * 1.06 * d for d in drift],
             ("document", "gluon"): [0.93 * 1.2 / 4 * d for d in drift]}
    return times, flops


def test_paired_ratios_are_per_visible_pair_against_gluon_causal_and_ignore_the_drift():
    times, flops = _drifting_rounds()
    ratios = probe_gluon_forward.paired_ratios(times, flops)
    assert set(ratios) == {"softcap_50", "document"}
    assert abs(ratios["softcap_50"] - 1.06) < 1e-12 and abs(ratios["document"] - 1.2) < 1e-12
    del times["causal", "gluon"]
    assert probe_gluon_forward.paired_ratios(times, flops) == {}


def test_the_ratio_is_the_median_of_the_rounds_ratios_not_the_ratio_of_the_medians():
    """Rounds where softcap_50 read 1.06x, 1.10x and 1.02x causal as they drifted: the paired median is 1.06;
    the medians' ratio (1.122 / 1.1) would read 1.02."""
    times = {("causal", "gluon"): [1.0, 1.2, 1.1], ("softcap_50", "gluon"): [1.06, 1.2 * 1.10, 1.1 * 1.02]}
    ratio = probe_gluon_forward.paired_ratios(times, {"causal": 1.0, "softcap_50": 1.0})["softcap_50"]
    assert abs(ratio - 1.06) < 1e-12


def test_the_timing_lines_keep_the_format_the_lease_scripts_read():
    """tools/lanes.sh's under_main takes the ms fourth field from the end of a `^  VARIANT *gluon ` line: the
    median of the rounds must sit there, and no range or ratio line may match that pattern."""
    times, flops = _drifting_rounds()
    lines = probe_gluon_forward.summary(times, flops)
    gluon_causal = [line for line in lines if line.startswith("  causal") and " gluon " in line]
    assert len(gluon_causal) == 1 and gluon_causal[0].split()[-4] == f"{0.93 * 1.05:.4f}"
    assert gluon_causal[0].split()[-3:] == ["ms", f"{4.0 / (0.93 * 1.05) / 1e9:.0f}", "TFLOP/s"]
    assert "  range causal gluon: 0.9300-1.0253 ms over 3 rounds" in lines
    assert "  per visible pair, gluon softcap_50 against gluon causal: 1.060x (median of paired rounds)" in lines
    one_round = {key: rounds[:1] for key, rounds in times.items()}
    assert len(probe_gluon_forward.summary(one_round, flops)) == len(times)  # no range or ratio lines
