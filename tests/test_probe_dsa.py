"""tools/probe_dsa.py's check before it times, on the CPU (our kernels through the interpreter, at a tiny shape
the masked kernel's 128-row blocks cover twice): both DSA kernels read as right against float64 over sampled rows,
and a call that attends to one key its selection left out reads as wrong. The timings need a GPU."""

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import probe_dsa  # noqa: E402
from variantbench.catalog.attention import AttentionVariant, make_problem  # noqa: E402
from variantbench.shapes import AttentionShape  # noqa: E402

VARIANT = AttentionVariant("dsa_topk_24", topk_tokens=24)
SHAPE = AttentionShape("tiny-s256", "tiny", batch=1, q_len=256, kv_len=256, device="cpu")


def test_both_kernels_read_right_and_a_call_past_the_selection_wrong():
    problem = make_problem(VARIANT, SHAPE, device="cpu", dtype=torch.float32, seed=2)
    built = probe_dsa.calls(VARIANT, problem, with_flex=False)
    rows = torch.tensor([0, 100, 200, 255])
    wider = problem.selection.clone()
    wider[:, 200, :200] |= ~wider[:, 200, :200]  # row 200 reads every key before it, not its top 24
    wrong = dataclasses.replace(problem, selection=wider)
    built["past the selection"] = probe_dsa.calls(VARIANT, wrong, with_flex=False)["masked"]
    errors = probe_dsa.errors(VARIANT, problem, built, rows)
    assert errors["masked"] <= 1e-4 and errors["gather"] <= 1e-4, errors
    assert errors["past the selection"] > probe_dsa.TOLERANCE, errors


def test_our_gradients_read_right_and_a_backward_past_the_selection_wrong():
    """--backward's check: our masked forward+backward against float64 autograd over sampled rows, and the same
    kernels over a selection that lets one row read every earlier key."""
    from kernels.attention import triton_token_sparse

    problem = make_problem(VARIANT, SHAPE, device="cpu", dtype=torch.float32, seed=2, requires_grad=True)
    rows = torch.tensor([0, 100, 200, 255])
    wider = problem.selection.clone()
    wider[:, 200, :200] = True
    built = {"ours": triton_token_sparse.trainable(problem.q, problem.k, problem.v, problem.selection),
             "past the selection": triton_token_sparse.trainable(problem.q, problem.k, problem.v, wider)}
    errors = probe_dsa.gradient_errors(VARIANT, problem, built, rows)
    assert errors["ours"] <= 1e-4 and errors["past the selection"] > probe_dsa.TOLERANCE, errors
