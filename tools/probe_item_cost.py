"""Where our Gluon forward's time goes at llama-3-8b-s4k: a cost per work item and per key tile, fitted to
do_bench timings of masks that walk the same 4096 items but different tiles:
    python tools/probe_item_cost.py [--windows 128,256,512,1024,2048]

Why: per useful FLOP the sliding window costs 1.136x the baseline and the documents 1.280x where grouped
causal costs 0.924 (session 28), though the window wastes only 1152 - 1024 of each row block's keys. Both
walk short: about 8 key tiles an item for the window, 5 for the documents, 16.5 for causal, 32 for full.
If an item carries a fixed cost (its first S and softmax with the tensor cores idle, its last P V, its
output's store, a wait for its query tile) that cost is what the short walks pay. This probe measures it:
full attention (32 tiles an item, none masked) and windows of 128 to 2048 keys (2 to 12.75 tiles, their far
edge and diagonal masked) all take B x Hq x S / 128 items, each of a mask's items walking about alike, so

    time x SMs = items x per_item + tiles x per_tile

fits the two costs by least squares, each of those timings an equation. Causal (16.5 tiles an item, 1 to
32) is timed and set against the fit, not fitted: its walks differ item to item and the schedule's tail
with them. Prints each mask's counts and time, the fit, and each timing's residual. Session 29 (one H200):
3.8 us an item, 1.68 us a tile (2.3 tiles an item), residuals within 23 us of 217-1778 us; a third term
for the masked tiles fitted -1.9 us an item (a window's masked tiles, about two an item, move with them).
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCH, Q_HEADS, KV_HEADS, SEQ, DIM = 4, 32, 8, 4096, 128
ROWS = TILE = 128  # an item's query rows and a key tile's keys (gluon_flash's BLOCK_M and BLOCK_N)


@dataclass(frozen=True)
class Walk:
    """One mask's work at a shape: items, key tiles walked, and those walked with the interval test."""
    name: str
    items: int
    tiles: int
    masked: int


def walk(name, seq, heads, causal, window=None):
    """The work gluon_walk.key_walk gives a mask of keys lo(q) <= k <= hi(q): for each 128-row block, the
    tiles from the first row's lo to the last row's hi, those every row sees whole unmasked."""
    lo = (lambda q: max(0, q - window + 1)) if window else (lambda q: 0)
    hi = (lambda q: q) if causal else (lambda q: seq - 1)
    items = tiles = masked = 0
    for q0 in range(0, seq, ROWS):
        first, last = q0, q0 + ROWS - 1
        first_tile, end_tile = lo(first) // TILE, (hi(last) + TILE) // TILE
        unmasked_lo = min(max((lo(last) + TILE - 1) // TILE, first_tile), end_tile)
        unmasked_hi = max(min((hi(first) + 1) // TILE, end_tile), unmasked_lo)
        items += 1
        tiles += end_tile - first_tile
        masked += (end_tile - first_tile) - (unmasked_hi - unmasked_lo)
    return Walk(name, items * heads, tiles * heads, masked * heads)


def walks(windows, seq=SEQ, heads=BATCH * Q_HEADS):
    return [walk("full", seq, heads, causal=False), walk("causal", seq, heads, causal=True),
            *(walk(f"window_{w}", seq, heads, causal=True, window=w) for w in windows)]


def fit(measured, sms):
    """(per_item, per_tile) in the times' unit, and each timing's residual, from [(Walk, time)]:
    time x sms = items x per_item + tiles x per_tile, least squares."""
    if len(measured) < 2:
        raise ValueError(f"two costs need two timings at least, not {len(measured)}")
    counts = torch.tensor([[w.items, w.tiles] for w, _ in measured], dtype=torch.float64)
    busy = torch.tensor([t * sms for _, t in measured], dtype=torch.float64)
    costs = torch.linalg.lstsq(counts, busy[:, None]).solution[:, 0]
    residuals = (counts @ costs - busy) / sms
    return tuple(costs.tolist()), residuals.tolist()


def set_against_fit(measured, sms):
    """(per_item, per_tile, rows): the costs fitted to every timing but causal's (its walks differ item to
    item), and for every timing (walk, measured, measured less the fit's, the items' share of the fit's time)."""
    (per_item, per_tile), _ = fit([(w, t) for w, t in measured if w.name != "causal"], sms)
    rows = []
    for w, t in measured:
        items, tiles = w.items * per_item, w.tiles * per_tile
        rows.append((w, t, t - (items + tiles) / sms, items / (items + tiles)))
    return per_item, per_tile, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", default="128,256,512,1024,2048",
                        help="sliding windows to time, keys, comma-separated (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        windows = [int(w) for w in args.windows.split(",")]
    except ValueError:
        parser.exit(2, f"--windows {args.windows}: comma-separated whole numbers of keys\n")
    if any(not 0 < w < SEQ for w in windows):
        parser.exit(2, f"--windows {args.windows}: each between 1 and {SEQ - 1} keys\n")
    if not torch.cuda.is_available():
        parser.exit(2, "probe_item_cost: no CUDA GPU (it times the Gluon forward, Hopper only)\n")
    import triton

    from kernels.attention import gluon_flash

    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(BATCH, Q_HEADS, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
    k, v = (torch.randn(BATCH, KV_HEADS, SEQ, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
            for _ in range(2))
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    measured = []
    for w in walks(windows):
        window = int(w.name.split("_")[1]) if w.name.startswith("window_") else None
        call = gluon_flash.forward_launcher(q, k, v, causal=w.name != "full", window=window)
        ms = triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median")
        measured.append((w, ms * 1e3))
        print(f"  {w.name:12} {w.items:6} items {w.tiles:7} tiles {w.masked:6} masked  {ms:8.4f} ms", flush=True)
    per_item, per_tile, rows = set_against_fit(measured, sms)
    print(f"fit over {len(measured) - 1} timings (causal set against it), {sms} SMs: per item {per_item:.3f} us "
          f"({per_item / per_tile:.2f} tiles), per tile {per_tile:.3f} us")
    for w, us, residual, share in rows:
        print(f"  {w.name:12} measured less the fit {residual:+8.2f} us of {us:8.1f}; "
              f"the items' fixed cost {share:6.1%} of the fit's time")


if __name__ == "__main__":
    main()
