"""The pending Gluon forward (kernels/attention/gluon_flash.py) on a GPU beside our Triton forward and SDPA
(cuDNN), causal GQA at llama-3-8b-s4k (B4, Hq 32, Hkv 8, S 4096, D 128, bfloat16):
    python tools/probe_gluon_forward.py
First each output against SDPA's (max difference; a wrong kernel shows here, not as a speed), then
each timed by triton's do_bench (median), in TFLOP/s on causal's useful work. Run it under `timeout`:
a kernel whose mbarriers never complete hangs rather than fails.
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kernels.attention import gluon_flash, triton_flash  # noqa: E402

BATCH, Q_HEADS, KV_HEADS, SEQ, DIM = 4, 32, 8, 4096, 128


def main():
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(BATCH, heads, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
               for heads in (Q_HEADS, KV_HEADS, KV_HEADS))
    flops = 4 * BATCH * Q_HEADS * DIM * SEQ * (SEQ + 1) / 2  # q.k and p.v over causal's visible pairs

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    ours = triton_flash.forward_launcher(q, k, v, causal=True)
    gluon = gluon_flash.forward_launcher(q, k, v, True)  # descriptors made once, as ours
    calls = {"sdpa (cuDNN)": cudnn, "ours (Triton)": ours, "gluon": lambda: gluon()[0]}
    expected = cudnn()
    for name, call in calls.items():
        got = call()
        torch.cuda.synchronize()
        print(f"  {name:16} max diff from SDPA {(got.float() - expected.float()).abs().max().item():.2e}", flush=True)
    for name, call in calls.items():
        ms = triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median")
        print(f"  {name:16} {ms:8.4f} ms {flops / ms / 1e9:6.0f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
