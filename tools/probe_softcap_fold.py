"""The bounded softcap's error on the GPU, seed by seed: our Gluon forward without an lse (the tanh's scale
folded into q, gluon_softmax.fold_tanh_scale) and with one (the running max, nothing folded), each against
float64 attention, beside the bfloat16 eager reference's own error, at the GPU test's shape (B2, Hq 32,
Hkv 8, S 640, D 128, softcap 50; tests/test_gpu_numerics.py):
    timeout 300 python tools/probe_softcap_fold.py [SEEDS]        (default 8)
The CPU model's figures over 32 seeds (tests/test_softcap_rounding.py): the fold's error 0.70x the
bfloat16 reference's (median), 1.00x at most; 1.11x the running max's, 1.57x at most.
"""

import dataclasses
import statistics
import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kernels.attention import gluon_flash  # noqa: E402
from reference.attention import attention  # noqa: E402
from variantbench.catalog import family  # noqa: E402


def errors(seed):
    """(folded, running max, bfloat16 reference): each output's largest error from float64."""
    fam = family("attention")
    variant = fam.variant("softcap_50")
    shape = dataclasses.replace(fam.shape("llama-3-8b-s4k"), name="probe", batch=2, q_len=640, kv_len=640)
    p = fam.make_problem(variant, shape, device="cuda", dtype=torch.bfloat16, seed=seed)
    assert gluon_flash.bounded_softcap(variant.softcap, False, torch.bfloat16, None), "no lse no longer folds"
    folded = gluon_flash.forward_launcher(p.q, p.k, p.v, causal=True, softcap=variant.softcap)()
    lse = torch.empty(p.q.shape[:3], device="cuda")
    with_max = gluon_flash.forward_launcher(p.q, p.k, p.v, causal=True, softcap=variant.softcap, lse=lse)()
    exact, low = (attention(*(t.to(dtype) for t in (p.q, p.k, p.v)), mask_mod=variant.mask_mod(p),
                            score_mod=variant.score_mod(p)) for dtype in (torch.float64, torch.bfloat16))
    return tuple((out.double() - exact).abs().max().item() for out in (folded, with_max, low))


@click.command()
@click.argument("seeds", type=click.IntRange(min=1), default=8)
def main(seeds):
    """The fold's error at seeds 0 .. SEEDS - 1 (default 8)."""
    rows = []
    for seed in range(seeds):
        folded, with_max, low = errors(seed)
        rows.append((folded / low, folded / with_max))
        print(f"seed {seed}: folded {folded:.4g}, running max {with_max:.4g}, bfloat16 reference {low:.4g}: "
              f"{folded / low:.3f}x the reference's, {folded / with_max:.3f}x the max's", flush=True)
    for index, what in ((0, "the bfloat16 reference's"), (1, "the running max's")):
        ratios = [row[index] for row in rows]
        print(f"folded against {what} error: median {statistics.median(ratios):.3f}x, at most {max(ratios):.3f}x")


if __name__ == "__main__":
    main()
