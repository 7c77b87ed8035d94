"""The special-function unit's (MUFU's) rate on this GPU, per instruction form, before a kernel bets on it:
    python tools/probe_mufu.py
Each form runs a long chain y <- f(-y) (exp2) or y <- f(y) (tanh) on every element of a large tensor, 8
independent elements a thread, so the unit's throughput, not one chain's latency, is the limit. Prints
each form's element-operations a second and a nanosecond per SM. The packed bfloat16 forms compile to
one MUFU a lane-element on sm_90 (tools/compile_forward_sm90.py's nvdisasm, session 20); whether such an
instruction retires faster than the float32 one is what this measures.
"""

import sys

import torch
import triton
import triton.language as tl

STEPS = 2048
ELEMENTS = 1 << 22  # 4M: 31,775 a SM on an H200's 132, enough warps to fill the unit
FORMS = {  # name: (inline PTX, its constraints, element dtype, elements a register)
    "ex2.approx.ftz.f32": ("{ .reg .f32 t; neg.f32 t, $1; ex2.approx.ftz.f32 $0, t; }", "=f,f", tl.float32, 1),
    "ex2.approx.ftz.bf16x2": ("{ .reg .b32 t; neg.bf16x2 t, $1; ex2.approx.ftz.bf16x2 $0, t; }", "=r,r", tl.bfloat16,
                              2),
    "tanh.approx.f32": ("tanh.approx.f32 $0, $1;", "=f,f", tl.float32, 1),
    "tanh.approx.bf16x2": ("tanh.approx.bf16x2 $0, $1;", "=r,r", tl.bfloat16, 2),
}


@triton.jit
def _chain(X, Y, ASM: tl.constexpr, CONSTRAINTS: tl.constexpr, DTYPE: tl.constexpr, PACK: tl.constexpr,
           STEPS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    y = tl.load(X + offs).to(DTYPE)
    for _ in range(STEPS):
        y = tl.inline_asm_elementwise(ASM, CONSTRAINTS, [y], dtype=y.dtype, is_pure=False, pack=PACK)
    tl.store(Y + offs, y.to(tl.float32))


def main():
    if not torch.cuda.is_available():
        print("probe_mufu: no CUDA GPU here", file=sys.stderr)
        sys.exit(2)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    x = torch.rand(ELEMENTS, device="cuda") * 0.5 + 0.25  # exp2's chain stays in (0.5, 1), tanh's shrinks
    y = torch.empty_like(x)
    block = 1024  # 4 warps, 8 elements a thread
    print(f"{torch.cuda.get_device_name()}: {STEPS} dependent steps on {ELEMENTS} elements, {sms} SMs")
    for name, (asm, constraints, dtype, pack) in FORMS.items():
        def launch():
            _chain[(ELEMENTS // block,)](x, y, asm, constraints, dtype, pack, STEPS, block, num_warps=4)
        launch()
        torch.cuda.synchronize()
        if not torch.isfinite(y).all():
            print(f"  {name:24} produced non-finite values; not timed")
            continue
        ms = triton.testing.do_bench(launch, warmup=25, rep=200, return_mode="median")
        rate = ELEMENTS * STEPS / (ms * 1e-3)
        print(f"  {name:24} {ms:8.3f} ms  {rate / 1e12:6.2f} T element-ops/s  {rate / sms / 1e9:6.2f} a ns per SM")


if __name__ == "__main__":
    main()
