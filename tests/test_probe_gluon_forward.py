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
