"""The comms family: the collectives multi-GPU inference puts inside the model.

Variants are the collectives (all_reduce, the family baseline through NCCL; all_gather,
reduce_scatter; all_to_all with uneven splits, and with even ones as nccl-tests times it; and the
expert-parallel dispatch/combine round trip, with split sizes from a real routing). The math is `reference/comms.py`. A shape is the bytes each
rank contributes; the ranks are every GPU of the machine (2 gloo processes on the CPU).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from reference import comms as reference_comms
from reference.moe import softmax_topk
from variantbench.catalog import Family, Implementation, check_numbers_in_name, lookup
from variantbench.shapes import COMMS_SHAPES

# The check runs each collective on at most this many elements per rank: the wrapper's layout and
# split logic does not depend on the size, and the reference holds every rank's tensors at once.
CHECK_NUMEL = 2**14
EP_ROW = 256  # elements per routed token row in the dispatch/combine sizes (a CPU-sized hidden dim)
EP_EXPERTS, EP_TOP_K = 8, 2  # Mixtral's routing, experts spread evenly over the ranks


def even_splits(seed, ranks, numel):
    """nccl-tests' alltoall: numel / ranks elements to every rank (nothing drawn, the seed is unused)."""
    return [[numel // ranks] * ranks for _ in range(ranks)]


def uneven_splits(seed, ranks, numel, row=1):
    """ranks x ranks element counts, each row summing to numel, in whole rows of `row` elements:
    seeded shares between 1/4 and 7/4 of even, so every pair exchanges a different amount."""
    gen = torch.Generator().manual_seed(seed)
    rows = numel // row
    splits = []
    for _ in range(ranks):
        share = 0.25 + 1.5 * torch.rand(ranks, generator=gen)
        counts = (share / share.sum() * rows).floor().long()
        counts[-1] += rows - counts.sum()
        splits.append([int(c) * row for c in counts])
    return splits


def routed_splits(seed, ranks, numel):
    """Dispatch sizes from a real routing: each rank's numel / EP_ROW tokens pick their top-2 of 8
    experts through a softmax router over seeded logits; expert e lives on rank e * ranks / 8."""
    gen = torch.Generator().manual_seed(seed)
    tokens = numel // (EP_ROW * EP_TOP_K)
    splits = []
    for _ in range(ranks):
        experts, _ = softmax_topk(torch.randn(tokens, EP_EXPERTS, generator=gen), EP_TOP_K)
        owner = experts.flatten() * ranks // EP_EXPERTS
        splits.append([int(c) * EP_ROW for c in torch.bincount(owner, minlength=ranks)])
    return splits


# nccl-tests' bus bandwidth factors (its doc/PERFORMANCE.md), by the formula a variant names: the
# algorithm bandwidth times this is comparable with the link's peak.
BUS_FACTORS = {"2(n-1)/n": lambda ranks: 2 * (ranks - 1) / ranks, "(n-1)/n": lambda ranks: (ranks - 1) / ranks}

# The bytes a collective counts as moved (nccl-tests' algorithm bytes), from the per-rank buffer's
# bytes, by the rule a variant names.
ALGORITHM_BYTES = {
    "buffer": lambda nbytes, ranks: nbytes,  # all-reduce; reduce-scatter's input; all-to-all
    "every rank's buffer": lambda nbytes, ranks: ranks * nbytes,  # all-gather's output
    "buffer there and back": lambda nbytes, ranks: 2 * nbytes,  # dispatch, then combine
}


@dataclass(frozen=True)
class CommsVariant:
    """`op` names a collective of reference/comms.py's OPS (kernels/comms/nccl.py has its own table of
    them); `bus_factor` and `algorithm_bytes` name rules of the tables above. Names, checked when the
    entry is made, so a typo fails before anything runs; ranks receive the op by name."""

    name: str
    op: str
    bus_factor: str
    algorithm_bytes: str
    baseline: bool = False
    note: str = ""
    # (seed, ranks, numel) -> splits[src][dst] element counts, for the all-to-all collectives
    splits: Callable[[int, int, int], list[list[int]]] | None = None

    def __post_init__(self):
        reference_comms.op(self.op)
        lookup(BUS_FACTORS, self.bus_factor, "bus bandwidth factor")
        lookup(ALGORITHM_BYTES, self.algorithm_bytes, "algorithm bytes rule")
        check_numbers_in_name(self, {})

    def unsupported(self, shape) -> str | None:
        return None

    def bus_bandwidth_factor(self, ranks):
        return BUS_FACTORS[self.bus_factor](ranks)

    def bytes_moved(self, nbytes, ranks):
        """nccl-tests' algorithm bytes of one collective over per-rank buffers of `nbytes`."""
        return ALGORITHM_BYTES[self.algorithm_bytes](nbytes, ranks)


VARIANTS = (
    CommsVariant("all_reduce", "all_reduce", "2(n-1)/n", algorithm_bytes="buffer", baseline=True,
                 note="sum over ranks, result on every rank"),
    CommsVariant("all_gather", "all_gather", "(n-1)/n", algorithm_bytes="every rank's buffer",
                 note="every rank's tensor on every rank"),
    CommsVariant("reduce_scatter", "reduce_scatter", "(n-1)/n", algorithm_bytes="buffer",
                 note="sum over ranks, rank r keeps chunk r"),
    CommsVariant("all_to_all", "all_to_all", "(n-1)/n", algorithm_bytes="buffer", splits=uneven_splits,
                 note="uneven seeded splits between every pair of ranks (bus bandwidth by nccl-tests' even formula: "
                      "the busiest rank moves more)"),
    CommsVariant("all_to_all_even", "all_to_all", "(n-1)/n", algorithm_bytes="buffer", splits=even_splits,
                 note="numel / ranks to every rank: nccl-tests' alltoall, and a capacity-padded expert dispatch"),
    CommsVariant("ep_dispatch_combine", "ep_dispatch_combine", "(n-1)/n", algorithm_bytes="buffer there and back",
                 splits=routed_splits,
                 note="expert-parallel dispatch and combine of routed tokens (Mixtral top-2 of 8 routing)"),
)


def world_size(device):
    """Every GPU of the machine (2 gloo processes on the CPU), or the torchrun world VARIANTBENCH_RANKS
    names (kernels/comms/ranks.py)."""
    from kernels.comms.ranks import world

    return world(device)


def missing_ranks(device, what):
    """Why `what` cannot run over this world's ranks (a VARIANTBENCH_RANKS naming no world, fewer than 2
    GPUs), or None: for the collectives and the split blocks alike."""
    from kernels.comms.ranks import BadRanks

    try:
        ranks = world_size(device)
    except BadRanks as why:  # `list` shows it; commands that run cases stop on it first (device.require)
        return str(why)
    if device == "cuda" and ranks < 2:
        return f"{what} needs 2 or more GPUs; this machine has {ranks}"
    return None


def _nccl_unsupported(variant, shape):
    return missing_ranks(shape.device, "a collective")


def _reference_unsupported(variant, shape):
    if shape.device == "cuda":
        return "the math of every rank in one process moves no data between GPUs: no floor for a collective"
    return None


IMPLEMENTATIONS = (
    Implementation("reference", "reference.comms", fused=False, backward=False, unsupported=_reference_unsupported),
    Implementation("nccl", "kernels.comms.nccl", fused=True, backward=False, unsupported=_nccl_unsupported,
                   every_gpu=True),
)


def rank_input(seed, rank, numel, dtype, device):
    """Rank `rank`'s seeded normal input (never zeros), drawn on its own device."""
    gen = torch.Generator(device).manual_seed(seed * 1009 + rank)
    return torch.randn(numel, generator=gen, device=device, dtype=torch.float32).to(dtype)


@dataclass
class CommsProblem:
    """This process's view (rank 0): its input `x`; every rank builds its own from the same seed.
    `check_outputs` holds every rank's output of the check run (filled by the implementation)."""

    variant: object
    shape: object
    ranks: int
    numel: int
    dtype: torch.dtype
    device: torch.device
    seed: int
    x: torch.Tensor
    check_outputs: list | None = None

    def inputs(self):
        return {"x": self.x}

    def grad_inputs(self):
        raise NotImplementedError("collectives have no backward here")

    def splits(self, numel):
        return self.variant.splits(self.seed, self.ranks, numel) if self.variant.splits else None

    def rank_inputs(self, numel):
        """Every rank's input of `numel` elements, in rank order, as each rank draws its own."""
        return [rank_input(self.seed, rank, numel, self.dtype, self.device) for rank in range(self.ranks)]

    def check_numel(self):
        return min(self.numel, CHECK_NUMEL)


def make_problem(variant, shape, *, device, dtype, seed, requires_grad=False):
    ranks = world_size(shape.device)
    elem = torch.finfo(dtype).bits // 8
    quantum = ranks * EP_ROW * EP_TOP_K  # reduce_scatter chunks and dispatch rows divide evenly
    numel = max(quantum, shape.nbytes // elem // quantum * quantum)
    return CommsProblem(variant, shape, ranks, numel, dtype, device, seed, rank_input(seed, 0, numel, dtype, device))


def check_views(variant, problem, out, rows):
    """Every rank's output of the check run against the reference on the same inputs."""
    numel = problem.check_numel()
    splits = problem.splits(numel)

    def reference(dtype):
        xs = [x.to(dtype) for x in problem.rank_inputs(numel)]
        return torch.cat(reference_comms.run(variant.op, xs, splits))

    # Inputs are drawn on the problem's device (a CUDA generator's values differ from the CPU's), the
    # outputs came back from every rank to the CPU: compare on the problem's device.
    return reference, torch.cat(problem.check_outputs).to(problem.device), problem.ranks


def work(variant, problem, backward=False):
    """(0 FLOPs, bus bytes): nccl-tests' bus bandwidth, the variant's algorithm bytes times its bus
    factor, which makes it comparable with the link's peak (see BUS_FACTORS and ALGORITHM_BYTES)."""
    algorithm_bytes = variant.bytes_moved(problem.numel * problem.x.element_size(), problem.ranks)
    return 0, math.ceil(algorithm_bytes * variant.bus_bandwidth_factor(problem.ranks))


FAMILY = Family(
    name="comms",
    variants=VARIANTS,
    implementations=IMPLEMENTATIONS,
    shapes=COMMS_SHAPES,
    baseline_implementation="nccl",
    make_problem=make_problem,
    check_views=check_views,
    work=work,
)
