"""The timers asv uses report per-call time of a batch; the batch fills a sample."""

import pytest
import torch

from variantbench import timing


class VirtualClock:
    """Time marks of a clock that only the calls advance: timing tests that no machine load can
    disturb (a 2-core CI box made wall-clock versions of these fail)."""

    def __init__(self):
        self.now = 0.0

    def flush(self):
        return None

    def mark(self):
        return self.now

    def wait(self):
        return None

    def ms(self, start, end):
        return end - start


def costing(clock, ms, repeats=1, log=None, name=None):
    def call():
        clock.now += ms
        if log is not None:
            log.append(name)

    call.repeats = repeats
    return call


def test_batched_body_fills_a_sample_and_the_timers_divide_by_its_operations(monkeypatch):
    """A call of 0.7 ms that repeats its operation 7 times: 0.1 ms per operation, so a 20 ms sample
    takes 29 calls, and the timers divide the clock by 29 x 7 operations."""
    clock = VirtualClock()
    call = costing(clock, 0.7, repeats=7)
    body = timing.batched(call, torch.device("cpu"), marks=clock)
    assert timing._calls_per_sample == 29 * 7
    before = clock.now
    body()
    assert clock.now - before == pytest.approx(29 * 0.7)
    monkeypatch.setattr(timing.time, "perf_counter", lambda: 406.0)
    assert timing.cpu_timer() == pytest.approx(406.0 / 203)


def test_a_gpu_sample_spans_a_tenth_of_the_power_controllers_swing():
    """On a GPU a sample is 100 ms of calls, so asv's 10 span the ~1 s swing of a power-capped clock
    (session 19, H200); on the CPU 20 ms keeps a run quick."""
    clock = VirtualClock()
    timing.batched(costing(clock, 10.0), torch.device("cuda"), marks=clock)
    assert timing._calls_per_sample == 10
    timing.batched(costing(clock, 10.0), torch.device("cpu"), marks=clock)
    assert timing._calls_per_sample == 2


def test_interleaved_rotates_order_and_reports_per_operation():
    clock, order = VirtualClock(), []
    calls = {name: costing(clock, ms, repeats=2, log=order, name=name) for name, ms in (("a", 1.0), ("b", 3.0), ("c", 5.0))}
    samples = timing.interleaved_ms(calls, torch.device("cpu"), rounds=3, warmup=0, marks=clock)
    assert samples == {"a": [0.5] * 3, "b": [1.5] * 3, "c": [2.5] * 3}
    assert order == list("abc") + list("bca") + list("cab")
    # in batches: each sample is `batch` calls back to back, per operation still
    order.clear()
    samples = timing.interleaved_ms(calls, torch.device("cpu"), rounds=2, warmup=0, marks=clock, batch=4)
    assert samples == {"a": [0.5] * 2, "b": [1.5] * 2, "c": [2.5] * 2}
    assert order == list("aaaabbbbcccc") + list("bbbbccccaaaa")


def test_spread_is_relative_iqr():
    assert timing.spread([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert timing.spread([0.9, 1.0, 1.0, 1.1]) == pytest.approx(0.15)


def powered_pair(clock, log):
    """Two calls on a power-capped GPU, as measured: the light one runs slow (1.3 ms instead of 1.0)
    for its first three calls after the heavy one, whose clock it inherits."""
    state = {"last": None, "since": 0}

    def make(name, settled, unsettled):
        def call():
            state["since"] = state["since"] + 1 if state["last"] == name else 1
            state["last"] = name
            clock.now += settled if state["since"] > 3 else unsettled
            log.append(name)
        return call

    return {"light": make("light", 1.0, 1.3), "heavy": make("heavy", 2.0, 2.0)}


def test_blocks_time_each_call_after_it_settles_where_interleaving_does_not():
    clock, log = VirtualClock(), []
    calls = powered_pair(clock, log)
    plan = timing.BlockPlan(rounds=3, block_ms=12.0, settle_ms=4.0)
    blocks = timing.alternating_blocks(calls, torch.device("cpu"), plan, marks=clock)
    # light is estimated at 1.12 ms (its first calls inherit the heavy one's clock): 4 settling calls and
    # 8 timed per block, none of them slow; heavy: 2 settling, 4-5 timed (its estimate sums 2.0s)
    assert blocks.samples["light"] == pytest.approx([1.0] * 24)
    assert blocks.samples["heavy"] == pytest.approx([2.0] * len(blocks.samples["heavy"]))
    assert len(blocks.samples["heavy"]) >= 12
    assert len(blocks.windows["light"]) == len(blocks.windows["heavy"]) == 3
    # After the two estimates (light, then heavy), blocks go light, heavy | heavy, light | light,
    # heavy: rotated per round, so round 2's heavy block follows round 1's and the runs merge.
    runs = [name for i, name in enumerate(log) if i == 0 or log[i - 1] != name]
    assert runs == ["light", "heavy"] * 3
    # Finely interleaved, the light call never settles: it reads its inherited 1.3 ms.
    other = VirtualClock()
    interleaved = timing.interleaved_ms(powered_pair(other, []), torch.device("cpu"), rounds=4, warmup=0, marks=other)
    assert interleaved["light"] == pytest.approx([1.3] * 4)


def test_log_ratio_standard_error_grows_with_the_spread_and_shrinks_with_samples():
    assert timing.log_ratio_standard_error([1.0] * 5, [2.0] * 5) == 0.0
    noisy = timing.log_ratio_standard_error([0.9, 1.0, 1.1, 1.0, 0.95], [2.0, 2.1, 1.9, 2.0, 2.05])
    assert noisy > 0
    assert timing.log_ratio_standard_error([0.9, 1.0, 1.1, 1.0, 0.95] * 4, [2.0, 2.1, 1.9, 2.0, 2.05] * 4) \
        == pytest.approx(noisy / 2)


def test_a_stalled_setup_writes_its_stack_to_the_progress_log(tmp_path, monkeypatch):
    """A build that blocks past the stall period leaves every thread's stack in the run's progress
    log (which `variantbench run` echoes), naming the function it blocks in; a healthy one leaves its
    ready line only."""
    import threading

    from suite import common
    from variantbench import progress

    monkeypatch.setenv("VARIANTBENCH_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # as on a GPU
    monkeypatch.setattr(progress, "STALL_DUMP_S", 0.05)
    never_set = threading.Event()

    def blocked_collective():
        never_set.wait(0.5)  # stands in for a rendezvous that never completes
        return "built"

    assert common.once_per_process("stalled-case", blocked_collective) == "built"
    log = (tmp_path / "progress.log").read_text()
    assert "Timeout (0:00:00" in log and "blocked_collective" in log
    assert log.rstrip().splitlines()[-1].startswith("stalled-case ready in ")
    (tmp_path / "progress.log").unlink()
    assert common.once_per_process("healthy-case", lambda: "built") == "built"
    assert (tmp_path / "progress.log").read_text() == ""  # built in under 0.05 s: nothing to say
    # under the Triton interpreter a slow build is healthy, and a dump of its busy thread crashed it
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert common.once_per_process("interpreted-case", blocked_collective) == "built"
    assert "Timeout" not in (tmp_path / "progress.log").read_text()


MIB = 2**20


@pytest.mark.parametrize("call_ms, issue_ms, repeats, working_set, graph, sets", [
    (0.020, 0.005, None, 67.4e6, True, 2),  # mqa decode at llama-3-8b-decode-kv8k: short, 67 MB
    (0.180, 0.010, None, 537e6, False, 1),  # gqa_8 decode: 537 MB, device-bound
    (0.050, 0.005, None, 537e6, False, 1),  # 50 us is not under 50 us
    (0.102, 0.100, None, 537e6, True, 1),  # the host issues it as slowly as the device runs it
    (0.102, 0.082, None, 537e6, True, 1),  # within 20% of host-bound
    (0.102, 0.081, None, 537e6, False, 1),
    (0.200, 0.010, None, 100 * MIB, False, 2),  # long, but 2 x 50 MiB of L2 would hold it
    (0.200, 0.010, None, 100 * MIB + 1, False, 1),
    (0.010, 0.010, 40, 8e3, False, 1),  # a collective: its call graphs its own repeats
    (20.3, 20.3, 1, 100.7e6, False, 1),  # one slow collective (two torchrun "nodes"): never captured around
])
def test_plan_graphs_short_or_host_bound_calls_and_rotates_what_fits_in_twice_the_l2(
        call_ms, issue_ms, repeats, working_set, graph, sets):
    plan = timing.plan_timing(call_ms, issue_ms, repeats, int(working_set), 50 * MIB)
    assert (plan.graph, plan.input_sets) == (graph, sets)
    assert ("CUDA-graph replays" in plan.why) == graph


@pytest.mark.parametrize("issue_ms, host_bound", [(0.79, False), (0.80, True), (1.30, True)])
def test_an_eager_calls_words_say_when_the_hosts_issue_sets_its_figure(issue_ms, host_bound):
    """A forward+backward is never captured: where the host takes HOST_BOUND (0.8) of a 1 ms call or more
    to issue it, its line in the run's log says the host sets the figure; below, only the share."""
    words = timing.eager_share(1.0, issue_ms)
    assert words.startswith(f"1000.0 us a call, {issue_ms:.0%} of it to issue: eager calls")
    assert ("the host's issue sets this figure" in words) == host_bound


def test_a_decode_step_is_graphed_at_any_length_and_a_prefill_by_the_rules_above():
    """Paged decode at b1 x kv128k: 0.153 ms eagerly, device-bound, 537 MB; as a decode step it replays
    as a graph (serving engines run decode so), as a prefill of the same length it stays eager."""
    decode = timing.plan_timing(0.153, 0.010, None, int(537e6), 50 * MIB, decode=True)
    assert (decode.graph, decode.input_sets) == (True, 1) and "a decode step, 153.0 us a call" in decode.why
    assert not timing.plan_timing(0.153, 0.010, None, int(537e6), 50 * MIB).graph
    # a collective, and a block split over ranks, stay uncaptured even as decode steps or host-bound
    assert not timing.plan_timing(0.153, 0.010, 40, int(537e6), 50 * MIB, decode=True).graph
    split = timing.plan_timing(1.29, 1.29, None, int(20e6), 50 * MIB, decode=True, ranks=4)
    assert (split.graph, split.input_sets) == (False, 1) and "over 4 ranks starts theirs by a message" in split.why


def test_decode_steps_are_one_new_query_a_sequence_in_the_decode_phase():
    from variantbench.catalog import family

    steps = {name: timing.decode_step(family(fam).shape(name)) for fam, name in (
        ("attention", "llama-3-8b-decode-kv8k"), ("attention", "llama-3-8b-chunk512-kv8k"),
        ("attention", "llama-3-8b-s4k"), ("paged", "llama-3-8b-paged16-b1-kv128k"),
        ("moe", "mixtral-8x7b-decode-t16-zipf"), ("moe", "mixtral-8x7b-prefill-t8k-zipf"),
        ("mla", "deepseek-v3-mla-decode-b64-kv8k"), ("block", "decode-b64-kv4k"), ("block", "prefill-b4-s4k"),
        ("linear", "qwen3-next-t4k"), ("comms", "comms-64m"))}
    assert [name for name, step in steps.items() if step] == [
        "llama-3-8b-decode-kv8k", "llama-3-8b-paged16-b1-kv128k", "mixtral-8x7b-decode-t16-zipf",
        "deepseek-v3-mla-decode-b64-kv8k", "decode-b64-kv4k"]


def test_input_sets_exceed_twice_the_l2_or_stop_at_the_cap_and_say_so():
    l2 = 50 * MIB
    for working_set in (1, 3 * MIB, 7 * MIB, 33 * MIB, 67 * MIB, 100 * MIB):
        sets = timing.input_sets(working_set, l2)
        assert sets == timing.MAX_INPUT_SETS or sets * working_set > 2 * l2
        assert sets == 1 or (sets - 1) * working_set <= 2 * l2  # the fewest that do
    assert timing.input_sets(67 * MIB, l2) == 2 and timing.input_sets(7 * MIB, l2) == 15
    assert timing.input_sets(3 * MIB, l2) == 16
    assert "capped: still partly in the L2" in timing.plan_timing(0.01, 0.001, None, 3 * MIB, l2).why
    assert "capped" not in timing.plan_timing(0.01, 0.001, None, 7 * MIB, l2).why


def test_graph_calls_last_a_millisecond_in_whole_passes_over_the_sets_and_are_capped():
    assert timing.graph_calls(0.02, 1) == 50
    assert timing.graph_calls(0.02, 2) == 50
    assert timing.graph_calls(0.03, 3) == 36  # 34 calls fill 1 ms: 12 passes of 3
    assert timing.graph_calls(0.001, 3) == 498  # 1000 wanted, capped at 500, whole passes
    assert timing.graph_calls(0.001, 1) == timing.MAX_GRAPH_CALLS
    assert timing.graph_calls(5.0, 4) == 4  # at least one pass


def test_a_figure_built_once_a_run_is_read_by_the_runs_later_processes(tmp_path, monkeypatch):
    """BlockParallel's two tracks run in two asv processes: the second reads the first's figures."""
    from suite import common

    monkeypatch.setenv("VARIANTBENCH_RUN_DIR", str(tmp_path))
    builds = []

    def build():
        builds.append(1)
        return {"efficiency": 0.67, "collectives_share": 0.2}

    assert common.once_per_run("block/llama/tensor_parallel/s/parallel", build)["efficiency"] == 0.67
    monkeypatch.setattr(common, "_prepared", {})  # another process of the run
    assert common.once_per_run("block/llama/tensor_parallel/s/parallel", build)["collectives_share"] == 0.2
    assert builds == [1]
    monkeypatch.setattr(common, "_prepared", {})
    common.once_per_run("block/qwen/tensor_parallel/s/parallel", build)  # another case builds its own
    assert builds == [1, 1]
    monkeypatch.delenv("VARIANTBENCH_RUN_DIR")  # outside a run: no memo, each process builds
    monkeypatch.setattr(common, "_prepared", {})
    common.once_per_run("block/llama/tensor_parallel/s/parallel", build)
    assert builds == [1, 1, 1]
