"""Where our MLA decode stands against the H200's roofline, and which tiles and split counts move it
(issue 14 asks for >= 80% of the copy peak at b64 x 8k; session 8 measured ours at 0.626 ms there).

    python3 tools/probe_mla.py [SHAPE ...]        (default deepseek-v3-mla-decode-b64-kv8k; on a GPU)

At 128 query heads a cache row (576 values, 1152 bytes) feeds 2 x 128 x (576 + 512) FLOPs: 242 FLOP a
byte, above an H200's ridge (989 TFLOP/s / 4.8 TB/s = 206), so the shape is bound by the tensor cores
before the copy peak. The probe prints both bounds, then do_bench medians of our kernel over a sweep
of tiles, warps, stages and split counts (each checked against the autotuned default's output first).
"""

import itertools
import sys

import torch
import triton
from triton.testing import do_bench

from kernels.mla import triton_decode
from variantbench import cases
from variantbench.device import measured_peaks


def launcher_with(problem, config, n_splits):
    """Our decode with one fixed tile config (the module's autotuned kernel swapped for a one-config one)."""
    original = triton_decode._tuned_partial
    triton_decode._tuned_partial = triton.autotune(configs=[config], key=["n_rows", "kv_len", "split_len"])(
        triton_decode._partial_kernel)
    try:
        return triton_decode.decode_launcher(problem.q_nope, problem.q_pe, problem.cache, problem.w_uk,
                                             problem.w_uv, scale=problem.scale, n_splits=n_splits)
    finally:
        triton_decode._tuned_partial = original


def main(shapes):
    peak = measured_peaks("cuda")["gbps"]  # the suite's own copy peak, as its % of peak figures use
    print(f"copy peak {peak:.0f} GB/s")
    for shape in shapes:
        case = cases.resolve("mla", "mla", "triton", shape, "cuda")
        problem, call, _ = cases.prepare_checked(case)
        p = problem
        batch, heads, q_len, _ = p.q_nope.shape
        kv_len, row = p.cache.shape[1], p.cache.shape[2]
        rank = p.w_uk.shape[-1]
        cache_bytes = p.cache.numel() * p.cache.element_size()
        flops = 2 * batch * heads * q_len * kv_len * (row + rank)
        print(f"{shape}: cache {cache_bytes / 1e6:.0f} MB, {flops / 1e9:.0f} GFLOP in the kernel; "
              f"copy bound {cache_bytes / peak / 1e6:.3f} ms, 989 TFLOP/s bound {flops / 989e9:.3f} ms")
        expected = call()
        base = do_bench(call, rep=300)
        print(f"  default (autotuned, {getattr(call, 'n_splits', '?')} splits): {base:.3f} ms, "
              f"{cache_bytes / base / 1e6:.0f} GB/s, {flops / base / 1e9:.0f} TFLOP/s")
        results = []
        for (h, n, w, st), splits in itertools.product(
                ((64, 32, 8, 1), (64, 64, 8, 1), (64, 32, 4, 1), (64, 16, 4, 2), (64, 32, 8, 2), (64, 64, 8, 2),
                 (32, 64, 4, 2), (32, 32, 4, 3), (32, 64, 4, 3), (16, 64, 4, 2), (64, 128, 8, 1)),
                (None, 1, 2, 4, 8, 16)):
            config = triton.Config({"BLOCK_H": h, "BLOCK_N": n}, num_warps=w, num_stages=st)
            try:
                launch = launcher_with(p, config, splits)
                out = launch()
                torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)
                ms = do_bench(launch, rep=100)
            except Exception as error:  # a tile that does not fit (shared memory, registers) is a result too
                print(f"  H{h} N{n} w{w} s{st} splits {splits}: {type(error).__name__}: {str(error)[:80]}")
                continue
            results.append((ms, h, n, w, st, launch.n_splits))
        for ms, h, n, w, st, splits in sorted(results)[:12]:
            print(f"  H{h} N{n} w{w} s{st} splits {splits}: {ms:.3f} ms, {cache_bytes / ms / 1e6:.0f} GB/s, "
                  f"{flops / ms / 1e9:.0f} TFLOP/s")


if __name__ == "__main__":
    main(sys.argv[1:] or ["deepseek-v3-mla-decode-b64-kv8k"])
