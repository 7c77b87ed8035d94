"""sequence_parallel_symm_mem: the sequence-parallel block with each all-gather and reduce-scatter fused
with the products beside it by torch's symmetric-memory operators (kernels/block/parallel.py)."""

from kernels.block.parallel import prepare_split


def prepare(variant, problem):
    return prepare_split(variant, problem, "sequence_symm_mem")
