"""Our attention's forward+backward on the GPU over backward tiles, beside SDPA's and Flex's:
    python tools/probe_attention_backward.py [variant ...]   (default: gqa_8 softcap_50; llama-3-8b-s4k)
For each variant, first the dK/dV kernel's tiles with the dQ kernel's fixed, then the dQ kernel's with
the fastest dK/dV tiles, each timed by triton's do_bench (median) and its gradients compared with the
default tiles' (a tile the kernels get wrong shows here, not as a speed). TFLOP/s on the catalog's
useful work of a forward+backward (3.5x the forward's FLOPs). Pick the winners into DKDV_TILES and
DQ_TILES of kernels/attention/triton_attention_backward.py, then gate the branch against main.

First, at the default tiles, where a forward+backward's device time goes, kernel by kernel (torch's
profiler over PROFILED_STEPS steps): which kernel the next change should be about. `--no-sweep` stops
there. The tiles are the Triton kernels': where the Gluon kernels run a case on Hopper (gluon_backward.py,
gluon_dq.py), the breakdown names _dkdv and _dq, and a sweep times the same kernels at every row.
"""

import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernels.attention import triton_attention_backward as backward  # noqa: E402
from variantbench import cases  # noqa: E402
from variantbench.catalog import family  # noqa: E402

Tiles = backward.Tiles
SHAPE, DEVICE = "llama-3-8b-s4k", "cuda"
# Eight warps split dK/dV's two float32 accumulators over 256 threads: 64 registers a thread at 128 keys,
# 32 at 64 (four warps hold 64 keys' in 128 and spilled, session 20).
DKDV = (Tiles(64, 64, 4, 2), Tiles(64, 64, 4, 3), Tiles(64, 64, 8, 2), Tiles(128, 64, 8, 2), Tiles(128, 64, 8, 3),
        Tiles(32, 128, 4, 2), Tiles(32, 128, 8, 3), Tiles(64, 128, 8, 2), Tiles(64, 128, 8, 3), Tiles(128, 128, 8, 2))
DQ = (Tiles(64, 64, 4, 2), Tiles(64, 64, 4, 3), Tiles(128, 64, 8, 2), Tiles(128, 64, 8, 3), Tiles(128, 32, 4, 3),
      Tiles(64, 128, 8, 2), Tiles(128, 128, 8, 2))


PROFILED_STEPS = 20


def breakdown(step):
    """Each kernel's device time a step, largest first, and their sum."""
    step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        for _ in range(PROFILED_STEPS):
            step()
        torch.cuda.synchronize()
    per_kernel = {}
    for event in profile.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.name] = per_kernel.get(event.name, 0.0) + event.time_range.elapsed_us() / 1e3 / PROFILED_STEPS
    total = sum(per_kernel.values())
    print(f"  device time a step, kernel by kernel (profiler, {PROFILED_STEPS} steps): {total:.3f} ms", flush=True)
    for name, ms in sorted(per_kernel.items(), key=lambda item: -item[1])[:8]:
        print(f"    {ms:8.3f} ms {100 * ms / total:5.1f}%  {name[:90]}", flush=True)


def named(tiles):
    return f"{tiles.rows}x{tiles.keys} w{tiles.warps} s{tiles.stages}"


def fwd_bwd(variant, implementation):
    case = cases.resolve("attention", variant, implementation, SHAPE, DEVICE)
    problem, call, _ = cases.prepare_checked(case, requires_grad=True)
    fam = family("attention")
    flops, _ = fam.work(case.variant, problem, backward=True)
    return cases.forward_backward(problem, call), flops


def timed(step, flops, label, expected=None):
    try:
        grads = step()
        ms = triton.testing.do_bench(step, warmup=25, rep=200, return_mode="median")
    except Exception as error:  # noqa: BLE001 - a tile the GPU refuses (shared memory) is one line
        print(f"  {label:44} refused: {type(error).__name__}: {cases.first_line(error)}", flush=True)
        return float("inf"), None
    diff = "" if expected is None else \
        f"  max diff from default tiles {max((g.float() - e.float()).abs().max().item() for g, e in zip(grads, expected)):.1e}"
    print(f"  {label:44} {ms:8.3f} ms {flops / ms / 1e9:6.0f} TFLOP/s{diff}", flush=True)
    return ms, grads


def probe(variant, sweep=True):
    print(f"{variant} at {SHAPE}, forward+backward", flush=True)
    for peer in ("sdpa", "flex"):
        try:
            step, flops = fwd_bwd(variant, peer)
        except Exception as error:  # noqa: BLE001 - SDPA runs no softcap; a peer not here
            print(f"  {peer:44} skip: {type(error).__name__}: {cases.first_line(error)}", flush=True)
            continue
        timed(step, flops, peer)
    step, flops = fwd_bwd(variant, "triton")
    default_dkdv, default_dq = backward.DKDV_TILES, backward.DQ_TILES
    _, expected = timed(step, flops, f"ours (Triton tiles dK/dV {named(default_dkdv)}, dQ {named(default_dq)})")
    breakdown(step)
    if not sweep:
        return
    best = {}
    for name, options in (("DKDV_TILES", DKDV), ("DQ_TILES", DQ)):
        results = {}
        for tiles in options:
            setattr(backward, name, tiles)
            results[tiles] = timed(step, flops, f"ours, {name} {named(tiles)}", expected)[0]
        best[name] = min(results, key=results.get)
        setattr(backward, name, best[name])
        print(f"  fastest {name}: {named(best[name])}", flush=True)
    backward.DKDV_TILES, backward.DQ_TILES = default_dkdv, default_dq


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--no-sweep"]
    for variant_name in arguments or ("gqa_8", "softcap_50"):
        probe(variant_name, sweep="--no-sweep" not in sys.argv)
