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

from variantbench.catalog import Family, Implementation
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
    from reference.moe import softmax_topk

    gen = torch.Generator().manual_seed(seed)
    tokens = numel // (EP_ROW * EP_TOP_K)
    splits = []
    for _ in range(ranks):
        experts, _ = softmax_topk(torch.randn(tokens, EP_EXPERTS, generator=gen), EP_TOP_K)
        owner = experts.flatten() * ranks // EP_EXPERTS
        splits.append([int(c) * EP_ROW for c in torch.bincount(owner, minlength=ranks)])
    return splits


@dataclass(frozen=True)
class CommsVariant:
    name: str
    op: str  # a function of reference/comms.py
    bus_factor: str  # nccl-tests' bus bandwidth factor: "2(n-1)/n" or "(n-1)/n"
    baseline: bool = False
    note: str = ""
    # (seed, ranks, numel) -> splits[src][dst] element counts, for the all-to-all collectives
    splits: Callable[[int, int, int], list[list[int]]] | None = None

    def unsupported(self, shape) -> str | None:
        return None

    def bus_bandwidth_factor(self, ranks):
        return 2 * (ranks - 1) / ranks if self.bus_factor == "2(n-1)/n" else (ranks - 1) / ranks


VARIANTS = (
    CommsVariant("all_reduce", "all_reduce", "2(n-1)/n", baseline=True, note="sum over ranks, result on every rank"),
    CommsVariant("all_gather", "all_gather", "(n-1)/n", note="every rank's tensor on every rank"),
    CommsVariant("reduce_scatter", "reduce_scatter", "(n-1)/n", note="sum over ranks, rank r keeps chunk r"),
    CommsVariant("all_to_all", "all_to_all", "(n-1)/n", splits=uneven_splits,
                 note="uneven seeded splits between every pair of ranks (bus bandwidth by nccl-tests' even formula: "
                      "the busiest rank moves more)"),
    CommsVariant("all_to_all_even", "all_to_all", "(n-1)/n", splits=even_splits,
                 note="numel / ranks to every rank: nccl-tests' alltoall, and a capacity-padded expert dispatch"),
    CommsVariant("ep_dispatch_combine", "ep_dispatch_combine", "(n-1)/n", splits=routed_splits,
                 note="expert-parallel dispatch and combine of routed tokens (Mixtral top-2 of 8 routing)"),
)


def world_size(device):
    return torch.cuda.device_count() if device == "cuda" else 2


def _nccl_unsupported(variant, shape):
    if shape.device == "cuda" and torch.cuda.device_count() < 2:
        return f"a collective needs 2 or more GPUs; this machine has {torch.cuda.device_count()}"
    return None


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
    import reference.comms as reference_comms

    numel = problem.check_numel()
    splits = problem.splits(numel)

    def reference(dtype):
        xs = [rank_input(problem.seed, r, numel, problem.dtype, problem.device).to(dtype) for r in range(problem.ranks)]
        op = getattr(reference_comms, variant.op)
        return torch.cat(op(xs, splits) if splits else op(xs))

    # Inputs are drawn on the problem's device (a CUDA generator's values differ from the CPU's), the
    # outputs came back from every rank to the CPU: compare on the problem's device.
    return reference, torch.cat(problem.check_outputs).to(problem.device), problem.ranks


def work(variant, problem, backward=False):
    """(0 FLOPs, bus bytes): nccl-tests' bus bandwidth, the algorithm bytes times the factor that makes
    it comparable with the link's peak (2(n-1)/n for all-reduce, (n-1)/n for the others). Algorithm
    bytes: the per-rank buffer for all-reduce, reduce-scatter's input and all-to-all; all-gather's
    output (n x per rank); the dispatch/combine round trip moves its buffer twice."""
    nbytes = problem.numel * problem.x.element_size()
    algorithm_bytes = {"all_gather": problem.ranks * nbytes, "ep_dispatch_combine": 2 * nbytes}.get(variant.op, nbytes)
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
