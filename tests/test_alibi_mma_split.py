"""The split gluon_softmax.alibi_rows hands the tensor cores, modelled on the CPU: ALiBi's slope in q.k's units
as three 16-bit parts (hi, mid, lo), times each key's column c (exact in 16 bits up to 255), summed in float32,
must give slope x c as float32 would: the kernel adds it to S instead of a score's add. Every head of 32 and
of 8, bfloat16 and float16, at head dim 128's scale."""

import math

import pytest
import torch

LOG2E = 1.4426950408889634


def parts(slope_qk, dtype):
    """alibi_rows' arithmetic: float32 throughout, each part rounded to the operand's dtype."""
    b = torch.tensor(slope_qk, dtype=torch.float32)
    hi = b.to(dtype).float()
    mid = (b - hi).to(dtype).float()
    lo = (b - hi - mid).to(dtype).float()
    return hi, mid, lo


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads", [32, 8])
def test_three_16_bit_parts_carry_the_slope_to_float32s_precision(dtype, heads):
    to_log2 = 128 ** -0.5 * LOG2E
    columns = torch.arange(128, dtype=torch.float32)
    assert torch.equal(columns.to(dtype).float(), columns)  # the key tile's columns, exact
    two_parts_miss = []  # without lo, does a bfloat16 split miss the bound (at some head)?
    for head in range(heads):
        slope = 2 ** (-8 * (head + 1) / heads) * LOG2E  # alibi_slope, exp2's units
        exact = torch.tensor(slope / to_log2, dtype=torch.float64) * columns.double()
        hi, mid, lo = parts(slope / to_log2, dtype)
        got = (hi * columns + mid * columns) + lo * columns  # each product exact, sums in float32
        # in exp2's units (times to_log2) within 4 float32 steps of the largest bias, about 2e-5 at head 0
        bound = 4 * 2.0 ** -23 * exact.max().item() * to_log2
        assert ((got.double() - exact).abs() * to_log2).max().item() <= bound
        two = (hi * columns + mid * columns).double()
        two_parts_miss.append(((two - exact).abs() * to_log2).max().item() > bound)
    if heads == 32:  # (at 8 heads the eight slopes' bfloat16 residues happen to fall within it)
        assert any(two_parts_miss) == (dtype == torch.bfloat16)  # float16 keeps 11 bits a part: two would do


def test_the_parts_sum_to_the_slope():
    hi, mid, lo = parts(math.pi, torch.bfloat16)
    assert abs((hi + mid + lo).item() - math.pi) < 1e-6 and hi.item() != math.pi and mid.item() != 0
