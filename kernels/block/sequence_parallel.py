"""sequence_parallel: the block split over every GPU of the machine (the tensor split, plus tokens between the products: all-gathers and reduce-scatters; kernels/block/parallel.py)."""

from kernels.block.parallel import prepare_split


def prepare(variant, problem):
    return prepare_split(variant, problem, "sequence")
