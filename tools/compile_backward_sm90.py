"""Compile our attention backward's kernels for Hopper (sm_90) on a machine without a GPU.

A kernel the interpreter runs can still fail Triton's GPU passes: bwd-speed's dQ kernel, with a branch
per key tile inside its loop, stopped Triton 3.6.0's software pipeliner ("PassManager::run failed") on
the first lease that ran it (session 16), after its interpreter tests had passed. triton.compile on an
ASTSource needs no driver, so the failure shows here in seconds. Use the GPU's Triton version, which
may not be the one installed here, in a venv of its own:

    python3 -m venv --system-site-packages /tmp/t36 && /tmp/t36/bin/pip install --no-deps triton==3.6.0
    /tmp/t36/bin/python tools/compile_backward_sm90.py

Each kernel compiles at llama-3-8b-s4k's argument specialisation (integers divisible by 16 marked as
the launcher marks them) over every tile tools/probe_attention_backward.py times, and every score and
mask switch at the default tiles. Prints a line a compile with what its launch needs (registers,
spills, shared memory: tools/sm90_cubin.py); exits 1 if any failed or would not launch on an sm_90 SM.
"""

import sys
from pathlib import Path

import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernels.attention import triton_attention_backward as backward  # noqa: E402 - its kernels, its tiles
import sm90_cubin  # noqa: E402
from probe_attention_backward import DKDV, DQ  # noqa: E402

# llama-3-8b-s4k's integer arguments that are not strides (those are all multiples of 16 there)
# (width: a selection's row of bytes, kv_len padded to 128)
VALUES = dict(n_kv_heads=8, n_q_heads=32, group=4, q_len=4096, kv_len=4096, window=0, prefix=0, width=4096)
POINTERS = {"Lse": "*fp32", "Delta": "*fp32", "DocStart": "*i32", "Selected": "*u8"}  # the rest are bf16 tensors
FLOATS = ("sm_scale", "softcap")
CAUSAL = dict(CAUSAL=True, WINDOW=False, PREFIX=False, DOCUMENTS=False, SOFTCAP=False, ALIBI=False, SELECTION=False,
              HEAD_DIM=128)
SWITCHES = (dict(), dict(SOFTCAP=True), dict(ALIBI=True), dict(DOCUMENTS=True), dict(WINDOW=True),
            dict(PREFIX=True), dict(CAUSAL=False),  # prefix-LM is causal past its prefix
            dict(SELECTION=True))  # DSA's token selection, a byte a key (triton_token_sparse.trainable)


def compiled(kernel, tiles, switches):
    """(what its launch needs, None), or (None, the first line of the compiler's error)."""
    constexprs = {**CAUSAL, **switches, "BLOCK_M": tiles.rows, "BLOCK_N": tiles.keys}
    first_stride = next(i for i, name in enumerate(kernel.arg_names) if name.startswith("stride"))
    pointers = [name for name in kernel.arg_names[:first_stride] if name not in VALUES]  # tensors, descriptors
    signature = {name: "constexpr" if name in constexprs else POINTERS.get(name, "*bf16") if name in pointers
                 else "fp32" if name in FLOATS else "i32" for name in kernel.arg_names}
    descriptor_tiles = {"desc_q": tiles.rows, "desc_do": tiles.rows, "desc_k": tiles.keys, "desc_v": tiles.keys}
    for name in set(descriptor_tiles) & set(kernel.arg_names):
        signature[name] = f"tensordesc<bf16[1, 1, {descriptor_tiles[name]}, {CAUSAL['HEAD_DIM']}]>"
    divisible = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names)
                 if signature[name].startswith("*") or name.startswith("stride") or VALUES.get(name, 1) % 16 == 0}
    try:
        kernel_binary = sm90_cubin.compile_sm90(kernel, signature, constexprs, divisible, tiles.warps, tiles.stages)
    except Exception as error:  # noqa: BLE001 - every compiler failure is one line here
        return None, f"{type(error).__name__}: {str(error).strip().splitlines()[-1]}"
    used = sm90_cubin.resources(kernel_binary)
    return used, used.refusal()


def main():
    jobs = [(backward._dkdv_kernel, tiles, switches) for tiles in DKDV for switches in SWITCHES[:2]]
    jobs += [(backward._dq_kernel, tiles, switches) for tiles in DQ for switches in SWITCHES[:2]]
    jobs += [(kernel, tiles, switches) for switches in SWITCHES[2:]
             for kernel, tiles in ((backward._dkdv_kernel, backward.DKDV_TILES), (backward._dq_kernel, backward.DQ_TILES))]
    print(f"triton {triton.__version__}, target sm_{sm90_cubin.HOPPER.arch}")
    failed = 0
    for kernel, tiles, switches in jobs:
        used, error = compiled(kernel, tiles, switches)
        failed += error is not None
        label = f"{kernel.__name__} {tiles.rows}x{tiles.keys} w{tiles.warps} s{tiles.stages} {switches or 'causal'}"
        print(f"  {'FAIL' if error else 'ok':4} {label}" + (f": {used}" if used else "") + (f": {error}" if error else ""),
              flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
