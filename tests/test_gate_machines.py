"""The gate across machines and power states: identity keys (cuDNN, NCCL; a key an older file lacks
is unknown), a commit measured on several machines, skipped versus failed, and the SM clocks each
side ran at. Results are synthetic (tests/test_gate.py's `write`)."""

import pytest
from click.testing import CliRunner

from test_gate import BASE, H200, HEAD, OLD_IDENTITY, _bisect, gate, sha, write
from variantbench.cli import main


def test_identity_keys_an_old_file_lacks_are_unknown_not_different(tmp_path):
    """Files recorded before cudnn and nccl joined the identity still compare with new ones, saying
    what was not checked; two different known values are incomparable (above)."""
    write(tmp_path, BASE, seed=1, identity=OLD_IDENTITY)
    write(tmp_path, HEAD, seed=2)
    result = gate(tmp_path, "--summary", str(tmp_path / "s.md"))
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "s.md").read_text()
    assert "Note: BASE's results do not record cudnn, nccl" in summary and "HEAD's results" not in summary
    assert "cuDNN 91002, NCCL 2.28.9" in summary
    result = CliRunner().invoke(main, ["compare", BASE, HEAD, "--no-run", "--results", str(tmp_path)])
    assert result.exit_code == 0 and "note: BASE's results do not record cudnn, nccl" in result.output


def test_identity_has_cudnn_and_nccl(monkeypatch):
    import torch

    from variantbench import device
    from variantbench.runner import machine_info

    cpu = device.identity("cpu")
    assert cpu["nccl"] == "none" and cpu["cudnn"] == str(torch.backends.cudnn.version() or "none")
    assert machine_info("cpu")[1]["nccl"] == "none"  # asv's machine params, where the gate reads them
    for name, value in (("get_device_name", lambda: "NVIDIA H200"), ("device_count", lambda: 1)):
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(device, "_nvidia_driver", lambda: "580.159.04")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(torch._C, "_nccl_version", lambda: (2 << 32) | (28 << 16) | 9, raising=False)
    monkeypatch.setattr(torch._C, "_nccl_version_suffix", lambda: b"", raising=False)
    gpu = device.identity("cuda")
    assert (gpu["nccl"], gpu["cudnn"]) == ("2.28.9", "91002")


def test_a_commit_measured_on_two_machines_is_gated_on_the_one_named(tmp_path):
    case = ("mqa", "triton", "llama-3-8b-s4k")
    write(tmp_path, BASE, seed=1)
    write(tmp_path, HEAD, seed=2)
    write(tmp_path, BASE, seed=3, identity=H200)
    write(tmp_path, HEAD, seed=4, identity=H200, slow={case: 1.25})
    result = gate(tmp_path, "--machine", "h100")
    assert result.exit_code == 0, result.output
    result = gate(tmp_path, "--machine", "h200")
    assert result.exit_code == 1 and "mqa/triton/llama-3-8b-s4k" in result.output
    assert "h200: NVIDIA H200" in result.output
    result = CliRunner().invoke(main, ["compare", BASE, HEAD, "--no-run", "--results", str(tmp_path),
                                       "--machine", "h200"])
    assert result.exit_code == 0 and " slower " in result.output
    result = gate(tmp_path)
    assert result.exit_code == 3
    line = [line for line in result.output.splitlines() if line.strip()]
    assert len(line) == 1 and "several machines (h100, h200): pass --machine" in line[0], result.output
    assert gate(tmp_path, "--machine", "h300").exit_code == 3  # no results there


def test_without_machine_the_one_machine_with_both_commits_is_used(tmp_path):
    write(tmp_path, BASE, seed=1)
    write(tmp_path, BASE, seed=3, identity=H200)
    write(tmp_path, HEAD, seed=4, identity=H200)
    result = gate(tmp_path)
    assert result.exit_code == 0, result.output
    assert "h200: NVIDIA H200" in result.output


def test_bisect_per_machine(tmp_path):
    commits = [sha("HEAD~2"), sha("HEAD~1"), sha("HEAD")]
    case = ("gqa_8", "triton", "llama-3-8b-s4k")
    for n, commit in enumerate(commits):
        write(tmp_path, commit, seed=n, slow={case: 1.3} if n >= 1 else None)
        write(tmp_path, commit, seed=10 + n, identity=H200, slow={case: 1.3} if n >= 2 else None)
    pattern = r"time_forward\(gqa_8, triton"
    for machine, first in (("h100", commits[1]), ("h200", commits[2])):
        result = CliRunner().invoke(main, ["bisect", commits[0], commits[-1], "--no-run", "--results", str(tmp_path),
                                           "-b", pattern, "--machine", machine])
        assert result.exit_code == 0, result.output
        assert f"first slower: {first}" in result.output
    result = _bisect(tmp_path, commits[0], commits[-1], pattern)
    assert result.exit_code == 3 and "pass --machine" in result.output


def test_skipped_on_head_is_skipped_not_failed(tmp_path):
    """NaN on HEAD (asv skipped it: NotImplementedError) is no crash; null (it failed) still is."""
    case = ("gqa_8", "flex", "llama-3-8b-s4k")
    write(tmp_path, BASE, seed=1)
    write(tmp_path, HEAD, seed=2, skip=case)
    result = gate(tmp_path)
    assert result.exit_code == 0, result.output
    assert "crashed on HEAD" not in result.output and "skipped 1" in result.output
    from variantbench import gate as gate_module, results

    verdicts = gate_module.compare_frames(*[results.load_file(next(tmp_path.glob(f"*/{c[:8]}*.json")))
                                            for c in (BASE, HEAD)], 1.10).set_index("params")
    assert verdicts.loc["gqa_8/flex/llama-3-8b-s4k", "verdict"] == "skipped"
    write(tmp_path, HEAD, seed=2, crash=case)
    assert gate(tmp_path).exit_code == 1


def test_the_gate_states_each_sides_clock_and_notes_where_they_differ(tmp_path):
    """A slower case that also ran 8% slower-clocked: still a regression (clocks never decide), with
    its clocks in the table and a note that the power state may explain it; one that ran at a
    different clock but not slower passes, named in the same note."""
    slowed, reclocked = ("mqa", "triton", "llama-3-8b-s4k"), ("causal", "sdpa", "llama-3-8b-s4k")
    write(tmp_path, BASE, seed=1, mhz=1900.0, mhz_by_case={reclocked: 1750.0})
    write(tmp_path, HEAD, seed=2, slow={slowed: 1.25}, mhz=1900.0, mhz_by_case={slowed: 1750.0, reclocked: 1900.0},
          throttle=4 | 8)
    result = gate(tmp_path, "--summary", str(tmp_path / "s.md"))
    assert result.exit_code == 1, result.output
    summary = (tmp_path / "s.md").read_text()
    assert "| mqa/triton/llama-3-8b-s4k | slower |" in summary and "| 1900 → 1750 MHz |" in summary
    (note,) = [line for line in summary.splitlines() if line.startswith("**Power state differs:**")]
    assert "more than 3% apart in 2 benchmark(s); a slowdown there may be the power state, not the code" in note
    assert "causal/sdpa/llama-3-8b-s4k (1750 → 1900 MHz)" in note and "mqa/triton/llama-3-8b-s4k" in note
    assert "Throttle reasons seen: BASE sw_power_cap; HEAD sw_power_cap, hw_slowdown." in summary
    assert "No power readings" not in summary
    result = CliRunner().invoke(main, ["compare", BASE, HEAD, "--no-run", "--results", str(tmp_path)])
    assert "base_mhz" in result.output and "head_mhz" in result.output
    write(tmp_path, HEAD, seed=2, mhz=1900.0)  # same speed, reclocked still 1750 vs 1900: reported, passes
    result = gate(tmp_path)
    assert result.exit_code == 0 and "causal/sdpa/llama-3-8b-s4k (1750 → 1900 MHz)" in result.output


@pytest.mark.parametrize("base_mhz, said", [(None, "No power readings (results"), (1900.0, "No power readings on HEAD")])
def test_no_power_readings_is_said_once(tmp_path, base_mhz, said):
    write(tmp_path, BASE, seed=1, mhz=base_mhz)
    write(tmp_path, HEAD, seed=2)
    result = gate(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.count("No power readings") == 1 and said in result.output
    assert "Power state differs" not in result.output


def test_each_timed_benchmark_gets_the_clock_of_its_own_samples():
    """Forward+backward ran at its own clock (AttentionForwardBackwardPower), the forward at its."""
    import pandas as pd

    from variantbench import figures, gate as gate_module

    assert figures.power_benchmark("bench_moe.MoEForward.time_forward") == "bench_moe.MoEForwardPower.track_sm_clock_mhz"
    params = ("gqa_8", "triton", "s4k")

    def frame(forward_mhz, backward_mhz):
        rows = [(b, v, s) for b, v, s in (
            ("bench_attention.AttentionForward.time_forward", 1e-3, [1e-3] * 10),
            ("bench_attention.AttentionForwardBackward.time_forward_backward", 3e-3, [3e-3] * 10),
            ("bench_attention.AttentionForwardPower.track_sm_clock_mhz", forward_mhz, None),
            ("bench_attention.AttentionForwardBackwardPower.track_sm_clock_mhz", backward_mhz, None))]
        return pd.DataFrame([{"benchmark": b, "params": params, "value": v, "samples": s, "q25": None, "q75": None,
                              "repeat": 10, "failed": False} for b, v, s in rows])

    verdicts = gate_module.compare_frames(frame(1900.0, 1700.0), frame(1880.0, 1650.0), 1.10).set_index("benchmark")
    assert verdicts.loc["bench_attention.AttentionForward.time_forward", ["base_mhz", "head_mhz"]].tolist() == [1900, 1880]
    assert verdicts.loc["bench_attention.AttentionForwardBackward.time_forward_backward",
                        ["base_mhz", "head_mhz"]].tolist() == [1700, 1650]
