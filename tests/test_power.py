"""Power readings through a stand-in NVML: windows pick the readings of their spans, throttle
reasons are named from NVML's bits, and a machine without NVML says why instead of failing."""

import sys
import time
import types

import pytest
import torch

from variantbench import power


def fake_nvml(clocks):
    """An NVML whose SM clock steps through `clocks` (then stays), at 650 W, power-capped."""
    state = {"i": 0}

    def clock(handle, which):
        value = clocks[min(state["i"], len(clocks) - 1)]
        state["i"] += 1
        return value

    return types.SimpleNamespace(
        NVML_CLOCK_SM=1, nvmlInit=lambda: None, nvmlDeviceGetClockInfo=clock,
        nvmlDeviceGetPowerUsage=lambda handle: 650_000,
        nvmlDeviceGetCurrentClocksEventReasons=lambda handle: 0x4,
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


def test_no_nvml_means_no_readings_with_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    sampler = power.Sampler(torch.device("cuda", 0))
    assert sampler.unavailable.startswith("no power readings (ModuleNotFoundError")
    with sampler:
        pass
    assert sampler.windows([(0, time.perf_counter())]) is None
    assert power.Sampler(torch.device("cpu")).unavailable == "no power readings on the CPU"


def test_reason_names_follow_nvml_bits():
    assert power.reason_names(0) == []
    assert power.reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal"]
