"""tensor_parallel: the block split over every GPU of the machine (heads and MLP split, an all-reduce after each row-parallel product; kernels/block/parallel.py)."""

from kernels.block.parallel import prepare_split


def prepare(variant, problem):
    return prepare_split(variant, problem, "tensor")
