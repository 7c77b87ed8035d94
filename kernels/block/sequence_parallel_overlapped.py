"""sequence_parallel_overlapped: the sequence-parallel block with each all-gather overlapped with the products after it and each reduce-scatter with the product before it, decomposed rank by rank (kernels/block/parallel.py)."""

from kernels.block.parallel import prepare_split


def prepare(variant, problem):
    return prepare_split(variant, problem, "sequence_overlapped")
