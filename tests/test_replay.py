"""The timed body on CUDA (variantbench.replay) through a stand-in device: a virtual stream whose
clocks only the calls advance, and fake graphs that replay faithfully or as broken captures would."""

import pytest
import torch

from variantbench import cases, replay, timing

MIB = 2**20
CUDA = torch.device("cuda")  # only a name here: every CUDA effect goes through the stand-ins
REPLAY_HOST_MS = 0.005  # the host's cost to launch one graph


class Stream:
    """A virtual CUDA stream and its host: an eager launch costs the host `host_ms`, and the device
    runs it once the host has issued it and the work before it is done. A launch being captured
    costs nothing; a replayed one costs the device only. Marks are read where the device reaches
    them; `wait` is the host waiting for the device."""

    def __init__(self):
        self.host = 0.0
        self.device = 0.0
        self.capturing = False
        self.replaying = False
        self.captured = []  # (seed, output) of every call captured, in order
        self.replayed = []  # the output of every call replayed, in order

    def launch(self, host_ms, device_ms):
        if self.capturing:
            return
        if not self.replaying:
            self.host += host_ms
        self.device = max(self.device, self.host) + device_ms

    def flush(self):
        return None

    def mark(self):
        self.device = max(self.device, self.host)
        return self.device

    def wait(self):
        self.host = max(self.host, self.device)

    def ms(self, start, end):
        return end - start

    def host_seconds(self):
        return self.host / 1e3


def stand_in(stream, host_ms, device_ms, seed=0, backend=None, dtype=torch.bfloat16, log=None):
    """A call on inputs of seed `seed`: one launch of those costs, returning a fresh output that
    depends on the seed. `log` gets the seed of every eager call."""
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        value = torch.randn(64, generator=gen).to(dtype)
    else:
        value = torch.randint(0, 1000, (64,), generator=gen).to(dtype)

    def call():
        stream.launch(host_ms, device_ms)
        out = value.clone()
        if stream.capturing:
            stream.captured.append((seed, out))
        elif stream.replaying:
            stream.replayed.append(out)
        elif log is not None:
            log.append(seed)
        return out

    call.backend = backend
    return call


class FakeGraph:
    """A replay writes what each captured call computes into the output that call returned while
    captured, as a CUDA graph does; a broken one (FakeCuda's `broken`) does not."""

    def __init__(self, stream, body, captured, broken):
        self.stream, self.body, self.captured, self.broken = stream, body, captured, broken

    def replay(self):
        self.stream.host += REPLAY_HOST_MS
        self.stream.replaying, self.stream.replayed = True, []
        try:
            self.body()
        finally:
            self.stream.replaying = False
        fresh = self.stream.replayed
        sets = len({seed for seed, _ in self.captured})
        written = {
            None: range(len(fresh)),
            "drops_work": range(0),
            "drops_later_passes": range(sets),  # the work of one pass over the sets, not of the others
            "reads_one_set": range(len(fresh)),
        }[self.broken]
        for i in written:
            self.captured[i][1].copy_(fresh[0] if self.broken == "reads_one_set" else fresh[i])


class FakeCuda:
    """variantbench.replay's device side on the CPU. A capture runs its body once at no cost, for the
    outputs a real capture allocates (holding the right values here: only the poison tells a replay
    that skips them); a replay runs the captured calls on the device clock. `broken` replays as a
    faulty capture would: writing nothing, only the first pass over the input sets, or the first
    set's output everywhere. `captures`: the seeds of each graph's calls."""

    def __init__(self, stream, l2_bytes=50 * MIB, sync=None, capture_error=None, broken=None):
        self.device, self.marks, self.host = CUDA, stream, stream.host_seconds
        self.l2, self.sync, self.capture_error, self.broken = l2_bytes, sync, capture_error, broken
        self.captures = []
        self.sync_checked = 0

    def l2_bytes(self):
        return self.l2

    def host_sync(self, call):
        self.sync_checked += 1
        return self.sync

    def capture(self, body):
        if self.capture_error:
            raise RuntimeError(self.capture_error)
        body()  # the warm-up
        self.marks.capturing, self.marks.captured = True, []
        try:
            outputs = body()
        finally:
            self.marks.capturing = False
        self.captures.append([seed for seed, _ in self.marks.captured])
        return FakeGraph(self.marks, body, self.marks.captured, self.broken), outputs


def copies_from(stream, host_ms, device_ms, made=None, **kwargs):
    def copy(seed):
        if made is not None:
            made.append(seed)
        return stand_in(stream, host_ms, device_ms, seed=seed, **kwargs)

    return copy


def test_issue_and_call_ms_tell_a_host_bound_call_from_a_device_bound_one():
    stream = Stream()
    device_bound = timing.issue_and_call_ms(lambda: stream.launch(0.005, 0.2), CUDA, marks=stream,
                                            host=stream.host_seconds)
    assert device_bound == pytest.approx((0.2005, 0.005))  # the span includes the first launch's 5 us
    # 10 calls the host needs 0.1 ms each to issue, 0.02 ms on the device: the device ends 0.02 ms
    # after the host issued the last one.
    host_bound = timing.issue_and_call_ms(lambda: stream.launch(0.1, 0.02), CUDA, marks=stream,
                                          host=stream.host_seconds)
    assert host_bound == pytest.approx((0.102, 0.1))


def per_call_of(body, stream):
    """Device ms per operation of one run of an asv body (what the asv timers divide by)."""
    stream.wait()
    before = stream.device
    body()
    stream.wait()
    return (stream.device - before) / timing._calls_per_sample


def test_a_short_call_is_replayed_as_a_checked_graph_of_a_millisecond_over_its_input_sets():
    """A call like mqa decode at llama-3-8b-decode-kv8k (67 MB moved; 26-29 us through SDPA replayed on
    an H200): 20 us on the device, 67 MiB. Two input sets (134 MiB > 2 x 50 MiB of L2), a graph of 50
    calls alternating them."""
    stream, made = Stream(), []
    cuda = FakeCuda(stream)
    call = stand_in(stream, 0.005, 0.02)
    timed, mode = replay.timed_call(call, CUDA, copies_from(stream, 0.005, 0.02, made), lambda: 67 * MIB, cuda)
    assert (mode.cuda_graph, mode.graph_calls, mode.input_sets) == (1, 50, 2)
    assert "2 input sets rotated" in mode.why and "under 50 us: CUDA-graph replays" in mode.why
    assert made == [1] and cuda.sync_checked == 1
    assert cuda.captures == [[0, 1] * 25]
    assert isinstance(timed, replay.Replay) and timed.repeats == 50
    # asv's body replays it and the timers divide by every call replayed: the device's 20 us, not the
    # host's 5 us per launch nor the replay's own launch.
    assert per_call_of(timing.batched(timed, CUDA, marks=stream), stream) == pytest.approx(0.02, rel=1e-3)


def test_a_decode_step_longer_than_a_short_call_is_replayed_too():
    """A device-bound 150 us call over 537 MB (paged decode at b1 x kv128k): eager as any call, a
    graph of 7 calls (a millisecond) as a decode step, which the replayed device time does not refuse."""
    for decode, graphed in ((False, 0), (True, 1)):
        stream = Stream()
        cuda = FakeCuda(stream)
        call = stand_in(stream, 0.005, 0.15)
        timed, mode = replay.timed_call(call, CUDA, copies_from(stream, 0.005, 0.15), lambda: 537 * 10**6, cuda,
                                        decode=decode)
        assert (mode.cuda_graph, mode.graph_calls, mode.input_sets) == (graphed, 7 * graphed, 1), mode.why
        assert isinstance(timed, replay.Replay) == bool(graphed)
        assert per_call_of(timing.batched(timed, CUDA, marks=stream), stream) == pytest.approx(0.15, rel=1e-3)
    # a decode step split over ranks (a tensor-parallel block) messages them each call: never captured
    stream = Stream()
    cuda = FakeCuda(stream)
    split = stand_in(stream, 0.005, 0.15)
    split.ranks = 2
    timed, mode = replay.timed_call(split, CUDA, copies_from(stream, 0.005, 0.15), lambda: 537 * 10**6, cuda,
                                    decode=True)
    assert (mode.cuda_graph, mode.input_sets) == (0, 1) and timed is split and cuda.captures == []


@pytest.mark.parametrize("broken, dtype, bad_set", [
    ("drops_work", torch.bfloat16, 0),
    ("drops_work", torch.int32, 0),  # poisoned with the eager output's complement
    ("drops_later_passes", torch.bfloat16, 0),
    ("reads_one_set", torch.bfloat16, 1),
])
def test_a_graph_whose_replay_differs_from_eager_calls_is_refused(broken, dtype, bad_set):
    stream = Stream()
    cuda = FakeCuda(stream, broken=broken)
    call = stand_in(stream, 0.005, 0.02, dtype=dtype)
    timed, mode = replay.timed_call(call, CUDA, copies_from(stream, 0.005, 0.02, dtype=dtype), lambda: 67 * MIB,
                                    cuda)
    assert (mode.cuda_graph, mode.graph_calls, mode.input_sets) == (0, 0, 2)
    assert mode.why.endswith(f"eager calls instead: a replay of its graph does not give an eager call's output on "
                             f"input set {bad_set}")
    assert isinstance(timed, replay.Rotating) and len(cuda.captures) == 1


def test_a_call_that_synchronises_with_the_host_is_never_captured():
    stream = Stream()
    cuda = FakeCuda(stream, sync="it synchronises with the host (called a synchronizing CUDA operation)")
    call = stand_in(stream, 0.005, 0.02)
    timed, mode = replay.timed_call(call, CUDA, copies_from(stream, 0.005, 0.02), lambda: 500 * MIB, cuda)
    assert timed is call and cuda.captures == []
    assert (mode.cuda_graph, mode.input_sets) == (0, 1)
    assert mode.why.endswith("eager calls instead: it synchronises with the host "
                             "(called a synchronizing CUDA operation)")


def test_a_failed_capture_is_timed_eagerly_with_its_reason():
    stream = Stream()
    cuda = FakeCuda(stream, capture_error="operation not permitted when stream is capturing\nmore")
    call = stand_in(stream, 0.005, 0.02)
    timed, mode = replay.timed_call(call, CUDA, copies_from(stream, 0.005, 0.02), lambda: 500 * MIB, cuda)
    assert timed is call and mode.cuda_graph == 0
    assert mode.why.endswith("eager calls instead: its capture failed "
                             "(operation not permitted when stream is capturing)")


def test_a_host_bound_call_is_captured_again_for_a_replay_of_a_millisecond():
    """100 us of host per launch, 10 us on the device: eagerly it reads 101 us, the host's. Sized from
    that, a graph of 10 calls replays in 0.1 ms; captured again from the replay's 10.5 us a call."""
    stream = Stream()
    cuda = FakeCuda(stream)
    call = stand_in(stream, 0.1, 0.01)
    timed, mode = replay.timed_call(call, CUDA, copies_from(stream, 0.1, 0.01), lambda: 500 * MIB, cuda)
    assert "the host took 99% of a call's 101.0 us to issue it" in mode.why
    assert [len(seeds) for seeds in cuda.captures] == [10, 96]
    assert (mode.cuda_graph, mode.graph_calls, timed.repeats) == (1, 96, 96)
    assert per_call_of(timing.batched(timed, CUDA, marks=stream), stream) == pytest.approx(0.01, rel=1e-2)


def test_a_call_slow_on_the_host_but_not_short_on_the_device_stays_eager():
    stream = Stream()
    cuda = FakeCuda(stream)
    call = stand_in(stream, 0.2, 0.1)
    timed, mode = replay.timed_call(call, CUDA, copies_from(stream, 0.2, 0.1), lambda: 500 * MIB, cuda)
    assert timed is call and mode.cuda_graph == 0 and len(cuda.captures) == 1
    assert mode.why.endswith("eager calls instead: replayed, a call takes 101.0 us on the device: not a short call")


def test_a_long_call_on_a_small_working_set_cycles_through_its_input_sets():
    """200 us a call, 40 MiB moved: eager calls over 3 input sets (120 MiB > 2 x 50 MiB), one after
    the other, each set's call in turn, and the body's figure is still the call's."""
    stream, log, made = Stream(), [], []
    cuda = FakeCuda(stream)
    call = stand_in(stream, 0.01, 0.2, log=log)
    timed, mode = replay.timed_call(call, CUDA, copies_from(stream, 0.01, 0.2, made, log=log), lambda: 40 * MIB,
                                    cuda)
    assert (mode.cuda_graph, mode.input_sets) == (0, 3) and made == [1, 2] and cuda.captures == []
    log.clear()
    body = timing.batched(timed, CUDA, marks=stream)
    assert per_call_of(body, stream) == pytest.approx(0.2, rel=1e-3)
    assert len(log) > 100 and log == [i % 3 for i in range(len(log))]


def test_copies_run_the_backend_the_case_runs_or_the_rotation_fails_loudly():
    """SDPA picks its fastest backend per prepare: a copy that picked another gives way to the next."""
    stream, made = Stream(), []
    call = stand_in(stream, 0.005, 0.02, backend="CUDNN_ATTENTION")
    picked = {1: "FLASH_ATTENTION", 2: "CUDNN_ATTENTION", 3: "EFFICIENT_ATTENTION", 4: "CUDNN_ATTENTION"}

    def copy(seed):
        made.append(seed)
        return stand_in(stream, 0.005, 0.02, seed=seed, backend=picked.get(seed))

    calls = replay.with_copies(call, copy, 3)
    assert calls[0] is call and made == [1, 2, 3, 4]
    assert all(torch.equal(c(), stand_in(stream, 0, 0, seed=s)()) for c, s in zip(calls[1:], (2, 4)))
    with pytest.raises(RuntimeError, match="12 copies of the inputs gave 2 that run backend CUDNN_ATTENTION: "
                                           "cannot rotate 4 input sets"):
        replay.with_copies(call, copy, 4)


def test_same_output_takes_another_summation_order_but_not_poison_another_set_or_another_shape():
    eager = torch.randn(256, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    reordered = (eager.float() * (1 + 2**-7)).to(torch.bfloat16)  # an ulp off, as another order gives
    assert replay.same_output(eager.clone(), eager) and replay.same_output(reordered, eager)
    assert not replay.same_output(torch.full_like(eager, float("nan")), eager)
    assert not replay.same_output(torch.randn(256, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16),
                                  eager)
    assert not replay.same_output(eager[:128], eager) and not replay.same_output(eager.float(), eager)
    ints = torch.arange(8)
    assert replay.same_output(ints.clone(), ints) and not replay.same_output(ints + (ints == 3), ints)


def test_copies_are_the_case_prepared_on_inputs_of_other_seeds():
    case = cases.resolve("attention", "mqa", "sdpa", "tiny-decode-kv256", "cpu")
    problem, call, _ = cases.prepare_checked(case)
    copy = replay.copier(case, problem)
    first, again = copy(1)(), copy(1)()
    assert torch.equal(first, again) and first.shape == call().shape
    assert not torch.allclose(first, call())


def test_on_the_cpu_the_timed_call_is_the_call_itself():
    case = cases.resolve("attention", "gqa_8", "sdpa", "tiny-s128", "cpu")
    problem, call, _ = cases.prepare_checked(case)
    timed, mode = replay.for_case(case, problem, call)
    assert timed is call and (mode.cuda_graph, mode.graph_calls, mode.input_sets) == (0, 0, 1)


def test_a_call_is_built_for_timing_once_a_process(monkeypatch):
    """A decode step's ratio and then asv's body ask for the same call: one capture and one set of
    input copies between them; another call (another prepare) gets its own."""
    case = cases.resolve("attention", "gqa_8", "sdpa", "tiny-s128", "cpu")
    problem, call, _ = cases.prepare_checked(case)
    built = []
    monkeypatch.setattr(replay, "timed_call", lambda call, *args: built.append(call) or (call, "mode"))
    assert replay.for_case(case, problem, call) is replay.for_case(case, problem, call)
    other = case.implementation.load().prepare(case.variant, problem)
    assert replay.for_case(case, problem, other)[0] is other
    assert built == [call, other]


def test_the_forward_records_how_it_was_timed_and_the_tracks_read_it(tmp_path, monkeypatch):
    from suite import common

    class Forward(common.ForwardBenchmark):
        family = "attention"

    class TimingMode(common.TimingModeBenchmark):
        family = "attention"

    params = ("gqa_8", "sdpa", "tiny-s128")
    track = TimingMode()
    monkeypatch.delenv("VARIANTBENCH_RUN_DIR", raising=False)
    with pytest.raises(NotImplementedError, match="not timed in this run"):
        track.setup(*params)  # outside a run: no memo to read
    monkeypatch.setenv("VARIANTBENCH_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(common, "_prepared", {})
    with pytest.raises(NotImplementedError, match="not timed in this run"):
        track.setup(*params)
    Forward().setup(*params)
    track.setup(*params)
    assert (track.track_cuda_graph(*params), track.track_l2_inputs(*params)) == (0, 1)
    # What the forward's process decided is what it times and what the tracks report.
    ran = []

    def planted(case, problem, call):
        def timed():
            ran.append(case.name)
            return call()

        return timed, replay.Mode(1, 50, 2, "planted")

    monkeypatch.setattr(common, "_prepared", {})
    monkeypatch.setattr(common.replay, "for_case", planted)
    forward = Forward()
    forward.setup(*params)
    ran.clear()
    forward.time_forward(*params)
    assert ran and set(ran) == {"attention/gqa_8/sdpa/tiny-s128"}
    track.setup(*params)
    assert (track.track_cuda_graph(*params), track.track_l2_inputs(*params)) == (1, 2)
    assert track.record["why"] == "planted"
