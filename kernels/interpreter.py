"""Whether our Triton kernels run compiled or through Triton's interpreter (TRITON_INTERPRET=1, every
CPU test), as a tl.constexpr a kernel can branch on. triton.jit makes the same decision when a kernel
module is imported, so this is read once, at import, as it does.

Where the two differ, a kernel takes the path each can run: the hardware tanh (inline PTX) exists only
compiled (kernels/attention/triton_flash.py); the interpreter sums a 16-bit tl.dot wrongly (triton 3.9:
8.5e10 off on a 16 x 64 bfloat16 product), so 16-bit dots go to float32 there (kernels/moe)."""

import os

import triton.language as tl

COMPILED = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")
