"""Collective benchmarks: every variant at every message size, over all the machine's GPUs (one
process each, rank 0 being asv's benchmark process; skipped with the reason below 2 GPUs), or 2 gloo
processes on the CPU.

time_forward is per collective (a call runs many back to back; see kernels/comms/nccl.py). The work
model counts bus bytes, so track_gbps is nccl-tests' bus bandwidth; setup checks every rank's output
against the reference first.
"""

from suite.common import ForwardBenchmark, MetricsBenchmark, PowerBenchmark, TimingModeBenchmark


class CommsForward(ForwardBenchmark):
    family = "comms"


class CommsMetrics(MetricsBenchmark):
    family = "comms"
    # Collectives do no arithmetic to count, and the roofline here is the device's memory copy
    # bandwidth, not its links': no figure for either until the links' peak is measured.
    track_tflops = None
    track_percent_of_peak = None


class CommsForwardPower(PowerBenchmark):
    family = "comms"


class CommsTimingMode(TimingModeBenchmark):
    family = "comms"
