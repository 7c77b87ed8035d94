"""tools/probe_item_cost.py's counts and fit, on the CPU: the items, key tiles and masked tiles it counts
for each mask are the walk's (brute force over every query row and key), the least-squares fit gives back
known costs, and causal is set against the fit, not fitted. The timings need a GPU; the costs it reports
are only as right as these."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import probe_item_cost  # noqa: E402
from probe_item_cost import ROWS, TILE, Walk, fit, set_against_fit, walk, walks  # noqa: E402


def brute_force(seq, causal, window):
    """(tiles, masked) of one head from the mask itself: a 128-row block walks every key tile from its first
    visible one to its last, and tests those some row of it does not see whole."""
    q = torch.arange(seq)[:, None]
    key = torch.arange(seq)[None, :]
    seen = (key <= q) if causal else torch.ones(seq, seq, dtype=torch.bool)
    if window:
        seen &= key > q - window
    tiles = masked = 0
    for q0 in range(0, seq, ROWS):
        block = seen[q0:q0 + ROWS].reshape(ROWS, seq // TILE, TILE)
        some, whole = block.any(dim=(0, 2)), block.all(dim=(0, 2))
        walked = torch.nonzero(some)[:, 0]
        tiles += int(walked[-1] - walked[0] + 1)
        masked += int((~whole[walked[0]:walked[-1] + 1]).sum())
    return tiles, masked


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 64), (True, 128), (True, 129),
                                           (True, 200), (True, 640), (True, 1000)])
def test_the_counts_are_the_masks_walks(causal, window):
    seq = 1024
    got = walk("w", seq, heads=3, causal=causal, window=window)
    tiles, masked = brute_force(seq, causal, window)
    assert (got.items, got.tiles, got.masked) == (3 * seq // ROWS, 3 * tiles, 3 * masked)


def test_every_mask_walks_the_same_items_and_full_attention_none_masked():
    full, causal, *windows = walks([256, 1024])
    assert {w.items for w in (full, causal, *windows)} == {4 * 32 * 32}
    assert full.masked == 0 and full.tiles == full.items * 32
    assert causal.masked == causal.items  # its diagonal tile only


def test_the_fit_gives_back_known_costs():
    per_item, per_tile, sms = 3.0, 1.7, 132
    measured = [(w, (w.items * per_item + w.tiles * per_tile) / sms) for w in walks([128, 512, 2048])]
    (item, tile), residuals = fit(measured, sms)
    assert item == pytest.approx(per_item) and tile == pytest.approx(per_tile)
    assert max(abs(r) for r in residuals) < 1e-9


def test_causal_is_set_against_the_fit_not_fitted():
    """Causal 10% slower than the costs the others fit: the fit still gives them back, and causal's line
    reads its own excess, measured less the fit, with the items' share of the fit's time."""
    per_item, per_tile, sms = 3.0, 1.7, 132
    measured = [(w, (w.items * per_item + w.tiles * per_tile) / sms * (1.1 if w.name == "causal" else 1.0))
                for w in walks([128, 512, 2048])]
    item, tile, rows = set_against_fit(measured, sms)
    assert item == pytest.approx(per_item) and tile == pytest.approx(per_tile)
    (causal, measured_us, residual, share), = [row for row in rows if row[0].name == "causal"]
    assert residual == pytest.approx(measured_us - measured_us / 1.1)
    assert share == pytest.approx(causal.items * per_item / (causal.items * per_item + causal.tiles * per_tile))
    assert all(abs(row[2]) < 1e-6 for row in rows if row[0].name != "causal")


def test_the_fit_refuses_fewer_timings_than_costs():
    with pytest.raises(ValueError, match="two timings"):
        fit([(Walk("a", 1, 2, 0), 1.0)], 132)


@pytest.mark.parametrize("windows", ["1,x", "0", "4096"])
def test_bad_windows_exit_2_in_one_line(windows, capsys):
    with pytest.raises(SystemExit) as stop:
        probe_item_cost.main(["--windows", windows])
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
