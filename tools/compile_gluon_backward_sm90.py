"""Compile our Gluon backward kernels, dK/dV (kernels/attention/gluon_backward.py) and dQ (gluon_dq.py), for
Hopper (sm_90) without a GPU:
    /tmp/t36/bin/python tools/compile_gluon_backward_sm90.py [CASE ...]   (Triton 3.6.0, as compile_gluon_sm90.py)
For each mask and score function compile_gluon_sm90.py compiles the forward for: registers, spilled bytes,
shared memory and the schedule's SASS counts (compile_gluon_sm90.report's line, its checks too). Exits 1 if a
compile fails or would not launch.
"""

import sys
from pathlib import Path

import torch
import triton
from triton.experimental.gluon._runtime import GluonASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_gluon_sm90 import CASES, SWITCHES, report  # noqa: E402
from kernels.attention import gluon_backward, gluon_dq  # noqa: E402
import sm90_cubin  # noqa: E402


# each kernel: its module and the rows of its query tiles (Q, dO) a copy
KERNELS = {"_dkdv": (gluon_backward, gluon_backward.BLOCK_M), "_dq": (gluon_dq, gluon_dq.BLOCK_M // 2)}


def compiled(name, switches):
    module, query_rows = KERNELS[name]
    layout = gluon_backward.gluon_flash.descriptor_layout(torch.bfloat16)
    rows = {"q_desc": query_rows, "do_desc": query_rows, "k_desc": module.BLOCK_N, "v_desc": module.BLOCK_N}
    kernel = getattr(module, name)
    constexprs = dict({name: switches.get(name, False) for name in SWITCHES if name in kernel.arg_names},
                      STAGES=module.STAGES,
                      CONSUMER_REGISTERS=module.CONSUMER_REGISTERS, PRODUCER_REGISTERS=module.PRODUCER_REGISTERS)
    pointers = {"Lse": "*fp32", "Delta": "*fp32", "DK": "*bf16", "DV": "*bf16", "DQ": "*bf16",
                "DocStart": "*i32" if switches.get("DOCUMENTS") else "*bf16",
                "Selection": "*i32" if switches.get("SELECTION") else "*bf16",
                "KeyWords": "*i16" if switches.get("SELECTION") else "*bf16"}
    signature = {name: f"tensordesc<bf16[1, 1, {rows[name]}, 128],{layout!r}>" if name in rows
                 else pointers.get(name) or ("fp32" if name in ("sm_scale", "softcap")
                                             else "constexpr" if name in constexprs else "i32")
                 for name in kernel.arg_names}
    source = GluonASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs={})
    return triton.compile(source, target=sm90_cubin.HOPPER,
                          options={"num_warps": module.WARPS, "maxnreg": module.MAX_REGISTERS})


def main(cases):
    print(f"triton {triton.__version__}, target sm_{sm90_cubin.HOPPER.arch}")
    # the forward's cases apart from its own switch (BOUNDED: a forward without a running max)
    cases = [case for case in cases if "BOUNDED" not in CASES[case]]
    failed = sum(report(f"{name} {case}", lambda name=name, case=case: compiled(name, CASES[case]))
                 for name in KERNELS for case in cases)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
