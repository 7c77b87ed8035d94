import os

# Before any triton import: our Triton kernels run through the interpreter on the CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("VARIANTBENCH_DEVICE", "cpu")
