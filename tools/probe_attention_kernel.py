"""Tuning probe for our Triton attention kernel on a GPU: checks, then times against SDPA and Flex.

Not part of the suite (asv owns the history); this is the quick loop for kernel work:
    python tools/probe_attention_kernel.py [MODULE ...]   # llama-3-8b geometry, S=4096, bf16
MODULE (default kernels.attention.triton_flash) is any file with our kernel's interface, say an older
version (`git show REV:kernels/attention/triton_flash.py > /tmp/before.py`, then /tmp/before.py), so
two versions are timed in one session on one card. Prints each module's autotune timings, chosen
config and a table of ms and TFLOP/s on the unmasked work.
"""

import importlib
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load(module):
    if not module.endswith(".py"):
        return importlib.import_module(module)
    spec = importlib.util.spec_from_file_location(Path(module).stem, module)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def visible_pairs(q_len, kv_len, lo, hi):
    pos = torch.arange(kv_len - q_len, kv_len)
    return int((hi(pos) - lo(pos) + 1).clamp(min=0).sum())


def main(modules):
    torch.manual_seed(0)
    B, H, HKV, S, D = 4, 32, 8, 4096, 128
    dt = torch.bfloat16
    q = torch.randn(B, H, S, D, device="cuda", dtype=dt)
    k = torch.randn(B, HKV, S, D, device="cuda", dtype=dt)
    v = torch.randn(B, HKV, S, D, device="cuda", dtype=dt)
    rows = []

    def bench(name, fn, pairs, batch=B, heads=H):
        ms = triton.testing.do_bench(fn, warmup=100, rep=500, return_mode="median")
        tf = 4 * batch * heads * D * pairs / ms / 1e9
        rows.append((name, ms, tf))

    causal_pairs = visible_pairs(S, S, lambda p: 0 * p, lambda p: p)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    kernels = {name: load(name) for name in modules}
    for name, kernel in kernels.items():
        out = kernel.forward_launcher(q, k, v, causal=True)()
        err = ((out.float() - ref).norm() / ref.norm()).item()
        tuned = getattr(kernel._prefill_kernel, "configs_timings", None) or {}
        for config, ms in sorted(tuned.items(), key=lambda item: item[1]):
            print(f"  {name} {config}: {ms}")
        print(f"{name} causal gqa rel err {err:.2e}; config {kernel._prefill_kernel.best_config}", flush=True)
        assert err < 1e-2
        bench(f"{Path(name).stem} causal gqa", lambda: kernel.forward_launcher(q, k, v, causal=True)(), causal_pairs)
    for be in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
        try:
            with sdpa_kernel(be):
                F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

                def call():
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

                bench(f"sdpa {be.name} causal gqa", call, causal_pairs)
        except RuntimeError as e:
            print(f"{be.name}: {str(e).splitlines()[0]}")
    bm = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, S, S)
    flex = torch.compile(flex_attention)
    flex(q, k, v, block_mask=bm, enable_gqa=True)
    bench("flex causal gqa", lambda: flex(q, k, v, block_mask=bm, enable_gqa=True), causal_pairs)

    w = 1024
    kc = torch.randn(16, HKV, 8192, D, device="cuda", dtype=dt)
    vc = torch.randn(16, HKV, 8192, D, device="cuda", dtype=dt)
    qd = torch.randn(16, H, 1, D, device="cuda", dtype=dt)
    refd = F.scaled_dot_product_attention(qd.float(), kc.float(), vc.float(), enable_gqa=True)
    for name, kernel in kernels.items():
        stem = Path(name).stem

        def forward(*tensors, launch=kernel.forward_launcher, **options):
            return launch(*tensors, **options)()

        bench(f"{stem} window 1024", lambda: forward(q, k, v, causal=True, window=w),
              visible_pairs(S, S, lambda p: (p - w + 1).clamp(min=0), lambda p: p))
        bench(f"{stem} full", lambda: forward(q, k, v, causal=False),
              visible_pairs(S, S, lambda p: 0 * p, lambda p: 0 * p + S - 1))
        bench(f"{stem} softcap", lambda: forward(q, k, v, causal=True, softcap=50.0), causal_pairs)
        outd = forward(qd, kc, vc, causal=True)
        print(f"{stem} decode rel err {((outd.float() - refd).norm() / refd.norm()).item():.2e}; "
              f"config {kernel._decode_kernel.best_config}")
        ms = triton.testing.do_bench(lambda: forward(qd, kc, vc, causal=True), return_mode="median")
        rows.append((f"{stem} decode kv8k GB/s", ms, 2 * kc.numel() * 2 / ms / 1e9))
    ms = triton.testing.do_bench(
        lambda: F.scaled_dot_product_attention(qd, kc, vc, enable_gqa=True), return_mode="median")
    rows.append(("sdpa decode kv8k GB/s", ms, 2 * kc.numel() * 2 / ms / 1e9))

    print(f"{'what':32} {'ms':>9} {'TFLOP/s|GB/s':>13}")
    for name, ms, tf in rows:
        print(f"{name:32} {ms:9.4f} {tf:13.1f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["kernels.attention.triton_flash"])
