"""Compile our expert GEMMs (kernels/moe/triton_experts.py) for Hopper (sm_90) on a machine without a
GPU, at DeepSeek-V3's sizes and every tiling the module uses (SHARES' too): whether Triton's GPU passes take
them and what a launch needs (registers, spilled bytes, shared memory: tools/sm90_cubin.py), with the copy-engine
loads (UTMALDG), cp.async loads (LDGSTS) and tensor-core instructions (HGMMA) in the SASS. gate_up
reads through tensor descriptors, down through pointers. Use the GPU's Triton version in a venv:

    python3 -m venv --system-site-packages /tmp/t36 && /tmp/t36/bin/pip install --no-deps triton==3.6.0
    /tmp/t36/bin/python tools/compile_experts_sm90.py

Prints a line a compile; exits 1 if any failed or would not launch on an sm_90 SM.
"""

import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the interpreter would make COMPILED False: no GPU paths

import triton  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import sm90_cubin  # noqa: E402
from kernels.moe import triton_experts as te  # noqa: E402

DIM, FFN, EXPERTS = 7168, 2048, 256  # DeepSeek-V3
COUNTED = ("UTMALDG", "LDGSTS", "HGMMA", "LDL", "STL")


def compile_one(kernel, tiles, descriptors, n_cols):
    """(resources, SASS opcodes) of one kernel at one tiling, bfloat16, as a launch specialises it."""
    constexprs = {"N_BLOCKS": triton.cdiv(n_cols, tiles.n), "N_EXPERTS": EXPERTS, "E_PAD": EXPERTS,
                  "BLOCK_M": tiles.m, "BLOCK_N": tiles.n, "BLOCK_K": tiles.k}
    boxes = {"a": [tiles.m, tiles.k], "w": [tiles.n, tiles.k]}
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in descriptors:
            signature[name] = f"tensordesc<bf16{boxes[descriptors[name]]}>"
        elif name == "offsets_ptr":
            signature[name] = "*i32"
        elif name.endswith("_ptr"):
            signature[name] = "*bf16"
        else:
            signature[name] = "i32"
    # pointers 16-byte aligned and DeepSeek-V3's dims and strides multiples of 16, as a launch marks them (not
    # the served experts' row bounds: HOT_ROWS is 178)
    divisible = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in kernel.arg_names
                 if signature[name] in ("*bf16", "*i32", "i32") and name not in ("least", "most")}
    compiled = sm90_cubin.compile_sm90(kernel, signature, constexprs, divisible, tiles.warps, tiles.stages)
    return sm90_cubin.resources(compiled), sm90_cubin.sass_opcodes(compiled.asm["cubin"])


def main():
    gate_ups = sorted({te.GATE_UP_TILES} | {share.tiles for share in te.SHARES})
    jobs = [("gate_up", te._gate_up_kernel, tiles, {"rows_desc": "a", "w13_desc": "w"}, FFN) for tiles in gate_ups]
    jobs += [("down", te._down_kernel, tiles, {}, DIM) for tiles in (te.DOWN_TILES_FEW, te.DOWN_TILES_MANY)]
    print(f"triton {triton.__version__}, sm_90, DeepSeek-V3 (dim {DIM}, ffn {FFN}, {EXPERTS} experts), bfloat16")
    failed = 0
    for name, kernel, tiles, descriptors, n_cols in jobs:
        label = f"{name:10s} {tuple(tiles)}"
        try:
            used, opcodes = compile_one(kernel, tiles, descriptors, n_cols)
        except Exception as error:  # noqa: BLE001 - one line a failed compile, then the next
            failed += 1
            print(f"  FAIL {label}: {str(error).strip().splitlines()[-1][:120]}", flush=True)
            continue
        counts = " ".join(f"{key} {sum(op == key or op.startswith(key + '.') for op in opcodes)}" for key in COUNTED)
        refusal = used.refusal()
        failed += refusal is not None
        print(f"  {'FAIL' if refusal else 'ok':4} {label} {used}; {len(opcodes)} instructions: {counts}"
              + (f": {refusal}" if refusal else ""), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
