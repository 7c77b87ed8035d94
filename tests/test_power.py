"""Power readings through a stand-in NVML: windows pick the readings of their spans, throttle
reasons are named from NVML's bits, and a machine without NVML says why instead of failing."""

import itertools
import sys
import time
import types

import pytest
import torch

from variantbench import power


def fake_nvml(clocks, energy_step=0):
    """An NVML whose SM clock steps through `clocks` (then stays), at 650 W, power-capped, its energy counter
    `energy_step` mJ further at each read."""
    state = {"i": 0}
    energy = itertools.count(123_456, energy_step)

    def clock(handle, which):
        value = clocks[min(state["i"], len(clocks) - 1)]
        state["i"] += 1
        return value

    return types.SimpleNamespace(
        NVML_CLOCK_SM=1, nvmlInit=lambda: None, nvmlDeviceGetClockInfo=clock,
        nvmlDeviceGetPowerUsage=lambda handle: 650_000,
        nvmlDeviceGetCurrentClocksEventReasons=lambda handle: 0x4,
        nvmlDeviceGetTotalEnergyConsumption=lambda handle: next(energy),
        NVMLError=RuntimeError,
    )


def test_windows_average_the_readings_inside_their_spans(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([1980] * 3 + [1700] * 1000))
    monkeypatch.setattr(power, "_nvml_handle", lambda index: "gpu0")
    sampler = power.Sampler(torch.device("cuda", 0), interval_s=0.001)
    assert sampler.unavailable is None
    with sampler:
        time.sleep(0.01)
        t0 = time.perf_counter()
        time.sleep(0.03)
        t1 = time.perf_counter()
    state = sampler.windows([(t0, t1)])
    assert state.sm_clock_mhz == pytest.approx(1700) and state.power_w == pytest.approx(650)
    assert state.throttle == ["sw_power_cap"] and state.readings >= 3
    assert sampler.windows([(t1 + 10, t1 + 20)]) is None
    assert sampler.energy_mj() == 123_456


def test_back_to_back_calls_take_the_counters_difference_over_the_calls(monkeypatch):
    """Two counter reads 600 mJ apart around 20 calls: 30 mJ a call, whatever the sampled power says; the
    warm-up call before the first read is not counted."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([1500] * 1000, energy_step=600))
    monkeypatch.setattr(power, "_nvml_handle", lambda index: "gpu0")
    sampler = power.Sampler(torch.device("cuda", 0), interval_s=0.001)
    issued = []
    ms, state, energy = sampler.back_to_back(lambda: issued.append(time.sleep(0.002)), 20, lambda: None)
    assert len(issued) == 21 and energy == pytest.approx(30.0)
    assert ms >= 2.0 and state.sm_clock_mhz == pytest.approx(1500) and state.power_w == pytest.approx(650)


def test_a_gpu_without_an_energy_counter_gives_none(monkeypatch):
    nvml = fake_nvml([1500])

    def unsupported(handle):
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    nvml.nvmlDeviceGetTotalEnergyConsumption = unsupported
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(power, "_nvml_handle", lambda index: "gpu0")
    sampler = power.Sampler(torch.device("cuda", 0))
    assert sampler.energy_mj() is None
    assert sampler.back_to_back(lambda: None, 3, lambda: None)[2] is None


def test_no_nvml_means_no_readings_with_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    sampler = power.Sampler(torch.device("cuda", 0))
    assert sampler.unavailable.startswith("no power readings (ModuleNotFoundError")
    with sampler:
        pass
    assert sampler.windows([(0, time.perf_counter())]) is None
    assert sampler.energy_mj() is None
    assert power.Sampler(torch.device("cpu")).unavailable == "no power readings on the CPU"


def test_reason_names_follow_nvml_bits():
    assert power.reason_names(0) == []
    assert power.reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal"]


def test_the_forwards_process_records_its_power_state_and_the_tracks_read_it(tmp_path, monkeypatch):
    """A timed benchmark's teardown leaves the power state over its samples in the run's memo; the
    ForwardPower tracks of the same run read it, and skip where the case was not timed."""
    from suite import bench_attention
    from variantbench import cases, timing

    monkeypatch.setenv("VARIANTBENCH_RUN_DIR", str(tmp_path))
    params = ("gqa_8", "sdpa", "tiny-s128")
    track = bench_attention.AttentionForwardPower()
    with pytest.raises(NotImplementedError, match="no power readings"):
        track.setup(*params)

    spans_seen = []

    class Readings:
        unavailable = None

        def windows(self, spans):
            spans_seen.append(spans)
            return power.PowerState(sm_clock_mhz=1801.0, power_w=655.0, throttle_mask=0x4, readings=12)

    monkeypatch.setattr(timing, "_marks", [1.0, 2.0, 3.0, 4.0])
    timed = bench_attention.AttentionForward()
    timed._power_case, timed._sampler = cases.resolve("attention", *params, "cpu"), Readings()
    timed.teardown(*params)
    assert spans_seen == [[(1.0, 2.0), (3.0, 4.0)]]  # the samples' spans, from the timer's marks
    track.setup(*params)
    assert (track.track_sm_clock_mhz(), track.track_power_w(), track.track_throttle_reasons()) == (1801.0, 655.0, 4)
