"""Compile our attention forward (kernels/attention/triton_flash.py) for Hopper (sm_90) on a machine
without a GPU, and count what a score costs in its SASS: the special-function (MUFU) instructions
(EX2, TANH), the float and integer ones, shared-memory traffic outside the copy engine (a layout
conversion's), MMAs, and what a launch needs (registers, spills, shared memory: tools/sm90_cubin.py):
what a change to the score path became, before a lease times it (session 19's softcap-split,
reports/pending/, compiled with half the ex2 and no shuffle through shared memory, and still ran
1.078x slower). Use the GPU's Triton version in a venv:

    python3 -m venv --system-site-packages /tmp/t36 && /tmp/t36/bin/pip install --no-deps triton==3.6.0
    /tmp/t36/bin/python tools/compile_forward_sm90.py

Counts are static (SASS instructions, nvdisasm's, loop bodies once each): compare them between variants.
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
from kernels.attention import triton_flash  # noqa: E402

HEAD_DIM = 128
CAUSAL = dict(CAUSAL=True, WINDOW=False, PREFIX=False, DOCUMENTS=False, SOFTCAP=False, ALIBI=False,
              HEAD_DIM=HEAD_DIM, STORE_LSE=False, SELECTION=False)
VARIANTS = {"causal": {}, "softcap": {"SOFTCAP": True}, "alibi": {"ALIBI": True}, "selection": {"SELECTION": True}}
# SASS opcodes (nvdisasm of the cubin): the special-function unit's, the float pipe's, the integer
# pipe's, shared memory outside the copy engine, the tensor cores'
COUNTED = ("MUFU.EX2", "MUFU.TANH", "FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "F2FP", "IMAD", "IADD3", "SHF",
           "LOP3", "STS", "LDS", "HGMMA")


def compile_one(switches, config):
    """(resources, SASS opcodes) of the forward at llama-3-8b-s4k's specialisation, bfloat16."""
    constexprs = {**CAUSAL, **switches, **config.kwargs}
    tile = [1, 1, config.kwargs["BLOCK_N"], HEAD_DIM]
    signature = {}
    for name in triton_flash._attention_forward_kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in ("desc_k", "desc_v"):
            signature[name] = f"tensordesc<bf16{tile}>"
        elif name in ("Q", "O"):
            signature[name] = "*bf16"
        elif name in ("DocStart",):
            signature[name] = "*i32"
        elif name == "Selected":
            signature[name] = "*u8"
        elif name == "Lse":
            signature[name] = "*fp32"
        elif name in ("sm_scale", "softcap"):
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    names = triton_flash._attention_forward_kernel.arg_names
    divisible = {(names.index(n),): [["tt.divisibility", 16]] for n in names
                 if signature[n] in ("*bf16", "*i32", "*fp32", "*u8") or n.startswith("stride")
                 or n in ("q_len", "kv_len")}
    compiled = sm90_cubin.compile_sm90(triton_flash._attention_forward_kernel, signature, constexprs, divisible,
                                       config.num_warps, config.num_stages)
    return sm90_cubin.resources(compiled), sm90_cubin.sass_opcodes(compiled.asm["cubin"])


def main():
    print(f"triton {triton.__version__}, sm_90, head dim {HEAD_DIM}, bfloat16; static SASS counts")
    failed = 0
    for config in triton_flash.PREFILL_CONFIGS:
        for name, switches in VARIANTS.items():
            if not triton_flash.fits(config, switches.get("SELECTION", False)):  # the autotuner never tries it
                continue
            label = f"{name:8s} {triton_flash._config_name(config):16s}"
            try:
                used, opcodes = compile_one(switches, config)
            except Exception as error:  # noqa: BLE001 - one line a failed compile, then the next
                failed += 1
                print(f"  FAIL {label}: {str(error).strip().splitlines()[-1][:120]}", flush=True)
                continue
            counts = f"{len(opcodes)} instructions: " + " ".join(
                f"{key} {sum(op == key or op.startswith(key + '.') for op in opcodes)}" for key in COUNTED)
            refusal = used.refusal()
            failed += refusal is not None
            print(f"  {'FAIL' if refusal else 'ok':4} {label} {used}; {counts}" + (f": {refusal}" if refusal else ""),
                  flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
