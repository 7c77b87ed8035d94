"""The GPU's power state while a figure is measured: SM clock, power draw and throttle reasons (NVML).

The lent H100s run at their 700 W cap: under sustained load cuDNN's attention drops from ~1.88 GHz
to 1.62-1.71 GHz while a lighter kernel stays near 1.8 GHz. A figure without the clock it ran at
cannot be told apart from a slower kernel, so every GPU figure carries the mean SM clock over its
samples, the mean power and the throttle reasons seen.

A `Sampler` reads NVML on a thread every INTERVAL_S while a measurement runs; `windows(spans)`
summarises the readings between pairs of host times (taken right after a synchronize, so a sample's host
time brackets the GPU work it belongs to). Where NVML is missing (no `nvidia-ml-py`, no driver, the
CPU) the sampler records nothing and says why once.
"""

import statistics
import threading
import time
from dataclasses import dataclass

# 2 ms: an NVML clock read costs ~20-60 us of a CPU core; a 20 ms timed batch still gets ~10 readings.
INTERVAL_S = 0.002

# nvmlClocksEventReason* bits (nvml.h); names as nvidia-smi prints them.
THROTTLE_REASONS = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal"),
    (0x40, "hw_thermal"),
    (0x80, "hw_power_brake"),
    (0x100, "display_clocks"),
)


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS if mask & bit]


@dataclass(frozen=True)
class PowerState:
    """Mean SM clock (MHz) and power (W) over a window, and every throttle reason seen in it (NVML's
    bits OR-ed: asv records numbers, and the report and gate name them with `reason_names`)."""

    sm_clock_mhz: float
    power_w: float
    throttle_mask: int
    readings: int

    @property
    def throttle(self) -> list[str]:
        return reason_names(self.throttle_mask)


def _nvml_handle(torch_index: int):
    """NVML's handle of torch's device `torch_index`, matched by PCI bus id (CUDA_VISIBLE_DEVICES
    renumbers torch's devices, not NVML's). Raises on any NVML failure."""
    import pynvml
    import torch

    pynvml.nvmlInit()
    props = torch.cuda.get_device_properties(torch_index)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        domain, device = getattr(props, "pci_domain_id", 0), getattr(props, "pci_device_id", 0)
        return pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08x}:{bus:02x}:{device:02x}.0".encode())
    return pynvml.nvmlDeviceGetHandleByIndex(torch_index)


def _throttle_mask(pynvml, handle) -> int:
    query = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
    return query(handle)


class Sampler:
    """Background NVML readings of one GPU: (host time, SM MHz, W, throttle mask).

    Use as a context manager around a measurement; `windows` summarises. `unavailable` is
    why there are no readings (None when sampling works)."""

    def __init__(self, device, interval_s: float = INTERVAL_S):
        self.interval_s = interval_s
        self.readings: list[tuple[float, float, float, int]] = []
        self.unavailable = None
        self._stop = threading.Event()
        self._thread = None
        if device.type != "cuda":
            self.unavailable = "no power readings on the CPU"
            return
        try:
            import pynvml

            self._pynvml = pynvml
            self._handle = _nvml_handle(device.index if device.index is not None else 0)
            self._read()  # fail here, not on the thread
            self.readings.clear()
        except Exception as error:  # noqa: BLE001 - missing wheel, no driver, no GPU: no readings, one reason
            self.unavailable = f"no power readings ({type(error).__name__}: {error})"

    def energy_mj(self):
        """The GPU's energy counter (mJ since the driver loaded; NVML's total energy, Volta on), or None where
        there are no readings or the GPU keeps no counter (a MIG slice): the work between two reads took their
        difference, whatever the clocks did."""
        if self.unavailable is not None:
            return None
        try:
            return self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._pynvml.NVMLError:
            return None

    def back_to_back(self, call, calls, synchronize):
        """(ms a call, PowerState, mJ a call) of `calls` calls issued back to back under these readings, after
        one call to warm up; `synchronize` waits for the device. The state None where there are no readings,
        the energy None where there is no counter. NVML's sampled power lags a load's changes (an H200's peak
        matmul, session 35: sampled 573 W, the counter's 688 W), so the counter's mJ over the time is the power
        to quote."""
        call()
        synchronize()
        with self:
            before, start = self.energy_mj(), time.perf_counter()
            for _ in range(calls):
                call()
            synchronize()
            end, after = time.perf_counter(), self.energy_mj()
        energy = None if before is None or after is None else (after - before) / calls
        return (end - start) * 1e3 / calls, self.windows([(start, end)]), energy

    def _read(self):
        nvml, handle = self._pynvml, self._handle
        self.readings.append((time.perf_counter(), nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
                              nvml.nvmlDeviceGetPowerUsage(handle) / 1e3, _throttle_mask(nvml, handle)))

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            self._read()

    def __enter__(self):
        if self.unavailable is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        return False

    def windows(self, spans) -> PowerState | None:
        """The readings taken inside any of the host-time spans (t0, t1); None when there are none."""
        return summarise([r for r in self.readings if any(t0 <= r[0] <= t1 for t0, t1 in spans)])


def summarise(readings) -> PowerState | None:
    if not readings:
        return None
    mask = 0
    for reading in readings:
        mask |= reading[3]
    return PowerState(sm_clock_mhz=statistics.fmean(r[1] for r in readings),
                      power_w=statistics.fmean(r[2] for r in readings), throttle_mask=mask, readings=len(readings))
