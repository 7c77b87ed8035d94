"""What ptxas made of a Triton kernel compiled for Hopper (sm_90), read from its cubin with the binaries
Triton ships (no GPU, no driver): the SASS opcodes (nvdisasm) and the resources a launch needs
(cuobjdump): registers a thread, stack bytes (spilled registers live there), shared memory.

Session 20 read these by hand and found what the timings alone had not said: our backward's dK/dV
kernel at 255 registers with 232 bytes spilled, and float32 tiles asking 328,704 bytes of shared
memory, more than an SM has, which only a GPU launch then reported. `compile_forward_sm90.py`,
`compile_backward_sm90.py` and `compile_experts_sm90.py` print both for every compile.
"""

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import sass_flow  # tools/, beside this module

HOPPER = GPUTarget("cuda", 90, 64)
# The most shared memory one block may opt into on sm_90 (227 KiB); a launch asking more fails.
HOPPER_SHARED_LIMIT = 232448


def _run(tool, cubin, *arguments):
    binary = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / tool
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        return subprocess.run([str(binary), *arguments, file.name], capture_output=True, text=True,
                              check=True).stdout


def sass_listing(cubin):
    """A cubin's SASS as nvdisasm lists it, with its labels (Triton 3.6.0's asm["sass"] stops at 4096
    instructions, mid-kernel for softcap at 128 x 128)."""
    return _run("nvdisasm", cubin, "-c")


def listing_opcodes(listing):
    """The opcodes of a SASS listing (`sass_listing`), each with its suffixes (`HGMMA.64x128x16.F32.BF16`), in
    order: sass_flow's reading of an instruction line."""
    return [found.group(3) for found in sass_flow.INSTRUCTION.finditer(listing)]


def sass_opcodes(cubin):
    """The opcodes of a cubin's SASS (`listing_opcodes` of its `sass_listing`)."""
    return listing_opcodes(sass_listing(cubin))


@dataclass(frozen=True)
class Resources:
    registers: int  # a thread
    stack: int  # bytes a thread: spills
    shared: int  # bytes a block, Triton's dynamic allocation

    def __str__(self):
        spill = f"{self.stack} B spilled" if self.stack else "no spill"
        return f"{self.registers} registers, {spill}, shared {self.shared} B"

    def refusal(self):
        """Why a Hopper launch would fail, or None."""
        if self.shared > HOPPER_SHARED_LIMIT:
            return f"shared memory {self.shared} B over sm_90's {HOPPER_SHARED_LIMIT}"
        return None


def resources(compiled):
    """A compiled kernel's (triton.compile's) registers and stack from ptxas, with its shared memory."""
    usage = _run("cuobjdump", compiled.asm["cubin"], "--dump-resource-usage")
    found = re.search(r"REG:(\d+).*?STACK:(\d+)", usage, re.S)
    if found is None:
        raise RuntimeError(f"no resource line in cuobjdump's output: {usage.strip()[-200:]}")
    return Resources(int(found.group(1)), int(found.group(2)), compiled.metadata.shared)


def compile_sm90(kernel, signature, constexprs, divisible, num_warps, num_stages):
    """triton.compile of a @triton.jit kernel for sm_90 at this specialisation: signature maps each
    argument to its type ("*bf16", "i32", "constexpr", "tensordesc<...>"), divisible the argument
    indices marked 16-divisible as a launch marks them."""
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=divisible)
    return triton.compile(source, target=HOPPER, options={"num_warps": num_warps, "num_stages": num_stages})
