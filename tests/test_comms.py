"""The comms family on CPU: the reference math, the split sizes, every collective through
torch.distributed with gloo and 2 processes against the reference, and the skip below 2 GPUs."""

import importlib
import re

import pytest
import torch

import reference.comms as reference_comms
from kernels.comms import nccl
from kernels.comms.nccl import replay_matches_eager, split_sizes
from variantbench import cases, check_workers
from variantbench.catalog import Unsupported, family
from variantbench.catalog.comms import CommsVariant, even_splits, routed_splits, uneven_splits

FAMILY = family("comms")


def test_reference_math_on_two_ranks():
    xs = [torch.arange(4.0), torch.arange(4.0) + 10]
    assert [t.tolist() for t in reference_comms.all_reduce(xs)] == [[10, 12, 14, 16]] * 2
    assert [t.tolist() for t in reference_comms.all_gather(xs)] == [[0, 1, 2, 3, 10, 11, 12, 13]] * 2
    assert [t.tolist() for t in reference_comms.reduce_scatter(xs)] == [[10, 12], [14, 16]]
    splits = [[1, 3], [2, 2]]  # rank 0 sends 1 element to itself and 3 to rank 1; rank 1 sends 2 and 2
    assert [t.tolist() for t in reference_comms.all_to_all(xs, splits)] == [[0, 10, 11], [1, 2, 3, 12, 13]]
    # round trip: rows come home multiplied by (the rank that processed them + 1)
    assert [t.tolist() for t in reference_comms.ep_dispatch_combine(xs, splits)] == [[0, 2, 4, 6], [10, 11, 24, 26]]


@pytest.mark.parametrize("module", ["reference.comms", "kernels.comms.nccl"])
def test_every_catalog_op_has_its_collective_in_each_implementation(module):
    assert {v.op for v in FAMILY.variants} <= set(importlib.import_module(module).OPS)


def test_an_unknown_op_fails_when_the_entry_is_made_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown collective 'broadcast'; known: all_reduce, all_gather, "):
        CommsVariant("broadcast", "broadcast", "(n-1)/n", algorithm_bytes="buffer")


@pytest.mark.parametrize("bus_factor, algorithm_bytes, unknown", [
    ("2(n-1)/N", "buffer", "bus bandwidth factor '2(n-1)/N'"),  # a typo once counted as (n-1)/n
    ("(n-1)/n", "twice the buffer", "algorithm bytes rule 'twice the buffer'"),
])
def test_an_unknown_bus_factor_or_byte_rule_fails_when_the_entry_is_made(bus_factor, algorithm_bytes, unknown):
    with pytest.raises(ValueError, match=re.escape(f"unknown {unknown}; known: ")):
        CommsVariant("all_reduce", "all_reduce", bus_factor, algorithm_bytes=algorithm_bytes)


def test_an_unknown_op_fails_in_the_reference_and_in_a_ranks_buffers():
    """A rank's dispatch once ran an all-to-all for any name it did not know."""
    with pytest.raises(ValueError, match="unknown collective 'broadcast'"):
        reference_comms.run("broadcast", [torch.ones(4)] * 2, None)
    with pytest.raises(ValueError, match="unknown collective 'broadcast'"):
        nccl._Collective(op="broadcast", rank=0, ranks=2, device="cpu", dtype=torch.float32, seed=0, numel=8,
                         check_numel=8, splits=None, check_splits=None)


def test_splits_cover_every_element_and_differ_between_pairs():
    splits = uneven_splits(seed=3, ranks=4, numel=4096)
    assert all(sum(row) == 4096 for row in splits)
    assert len({c for row in splits for c in row}) > 4
    routed = routed_splits(seed=3, ranks=2, numel=2 * 256 * 64)
    assert all(sum(row) == 2 * 256 * 64 and all(c % 256 == 0 for c in row) for row in routed)


def test_even_splits_take_torchs_equal_split_path_and_uneven_ones_give_their_sizes():
    assert even_splits(seed=3, ranks=4, numel=4096) == [[1024] * 4] * 4
    assert split_sizes(even_splits(seed=3, ranks=4, numel=4096), rank=2) == (None, None)
    splits = [[1, 3], [2, 2]]
    assert split_sizes(splits, rank=1) == ([3, 2], [2, 2])  # rank 1 receives 3 from rank 0, 2 from itself


def test_the_capture_check_passes_a_reordered_bf16_sum_and_fails_a_missed_collective(monkeypatch):
    monkeypatch.setattr("kernels.comms.nccl.CAPTURE_CHECK_CHUNK", 1000)  # several chunks, the last one short
    gen = torch.Generator().manual_seed(0)
    ranks = [torch.randn(4096, generator=gen).to(torch.bfloat16) for _ in range(4)]
    eager = ((ranks[0] + ranks[1]) + ranks[2]) + ranks[3]
    reordered = (ranks[0] + ranks[1]) + (ranks[2] + ranks[3])
    assert not torch.equal(eager, reordered)
    assert replay_matches_eager(reordered, eager)
    assert not replay_matches_eager(ranks[0], eager)  # an in-place all-reduce that never ran
    missed = eager.clone()
    missed[-1] = float("nan")  # an output the replay never wrote, in the last chunk only
    assert not replay_matches_eager(missed, eager)


@pytest.mark.parametrize("variant", [v.name for v in FAMILY.variants])
def test_every_collective_through_gloo_matches_the_reference(variant):
    result = check_workers.check_one(cases.resolve("comms", variant, "nccl", "comms-cpu-4k", "cpu"))
    assert result.status == "ok", result.line


def test_a_collective_that_disagrees_with_the_reference_is_a_mismatch(monkeypatch):
    def wrong(xs, splits):  # rows processed by rank r multiplied by r, not r + 1
        arrived = reference_comms.all_to_all(xs, splits)
        back = [list(row) for row in zip(*splits)]
        return reference_comms.all_to_all([rows * rank for rank, rows in enumerate(arrived)], back)

    monkeypatch.setitem(reference_comms.OPS, "ep_dispatch_combine", wrong)
    result = check_workers.check_one(cases.resolve("comms", "ep_dispatch_combine", "nccl", "comms-cpu-4k", "cpu"))
    assert result.status == "mismatch", result.line


def test_below_two_gpus_a_collective_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    with pytest.raises(Unsupported, match="needs 2 or more GPUs; this machine has 1"):
        cases.resolve("comms", "all_reduce", "nccl", "comms-1g", "cuda")


def test_bus_bytes_follow_nccl_tests():
    shape = FAMILY.shape("comms-cpu-256k")
    for name, factor in (("all_reduce", 1.0), ("all_gather", 1.0), ("reduce_scatter", 0.5), ("all_to_all", 0.5),
                         ("ep_dispatch_combine", 1.0)):  # 2 ranks
        variant = FAMILY.variant(name)
        problem = FAMILY.make_problem(variant, shape, device=torch.device("cpu"), dtype=torch.float32, seed=0)
        assert FAMILY.work(variant, problem) == (0, int(problem.numel * 4 * factor)), name


def test_a_rank_that_dies_at_start_fails_the_case_at_once_with_its_exit_code(monkeypatch):
    """Ranks are started as their own program; one that exits before its first word (a broken
    interpreter path, an import error) fails its case in one line, not after the 60 s rendezvous."""
    import kernels.comms.nccl as nccl

    monkeypatch.setattr(nccl, "_workers", [])
    monkeypatch.setattr(nccl.sys, "executable", "false")  # exits 1 before reading anything
    case = cases.resolve("comms", "all_reduce", "nccl", "comms-cpu-4k", "cpu")
    problem = FAMILY.make_problem(case.variant, case.shape, device=torch.device("cpu"), dtype=torch.float32, seed=1)
    with pytest.raises(RuntimeError, match="rank 1 exited with code 1 before its start reply"):
        nccl.prepare(case.variant, problem)


def test_repeats_are_whole_replays_of_a_short_graph():
    """Longer graphs time slower per collective (tools/comms_truth.py): a call replays a graph of at
    most GRAPH_OPS collectives, so its repeats are a whole number of those."""
    import kernels.comms.nccl as nccl

    assert nccl.whole_graphs(7) == 7
    assert nccl.whole_graphs(nccl.GRAPH_OPS) == nccl.GRAPH_OPS
    assert nccl.whole_graphs(nccl.GRAPH_OPS + 1) == 2 * nccl.GRAPH_OPS
    assert nccl.whole_graphs(389) % nccl.GRAPH_OPS == 0 and nccl.whole_graphs(389) >= 389


def test_comms_truth_sizes_and_counts_a_collective_as_the_suite_does():
    """tools/comms_truth.py, the suite's independent check, reads --sizes as each rank's buffer and
    its bus bandwidth by the catalog's rules: 64 MiB a rank over 4 ranks in 1 ms is 100.7 GB/s of
    all-reduce (2 x 3/4), 201.3 of all-gather (4 buffers gathered, 3/4) and 50.3 of reduce-scatter.
    Its all-gather once took 1/ranks of the size in, a quarter of the suite's call."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tools" / "comms_truth.py"
    spec = importlib.util.spec_from_file_location("comms_truth", path)
    truth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(truth)
    mib64 = 64 * 2**20
    got = {op: truth.bus_gbps(op, mib64, 4, 1000.0) for op in truth.OPS}
    assert got == pytest.approx({"all_reduce": 100.66, "all_gather": 201.33, "reduce_scatter": 50.33}, abs=0.01)
    for op in truth.OPS:  # the same bytes as the suite's work model over that many ranks
        variant = FAMILY.variant(op)
        suite_bytes = variant.bytes_moved(mib64, 4) * variant.bus_bandwidth_factor(4)
        assert got[op] == pytest.approx(suite_bytes / 1e-3 / 1e9)
