"""Where our paged decode stands against the copy peak under each launch plan its tuner tries, and
which plan the tuner picks (the issue asks >= 85% of the measured copy peak at batch 1 x 128k;
session 8's fixed plan reached 0.193 ms there, ~65%, and 99% at batch 64 x 8k).

    python3 tools/probe_paged.py [SHAPE ...]      (on a GPU; default the two shapes below)

Each plan of kernels/paged/triton_paged.py's CANDIDATES is checked against the default plan's output,
then timed by a do_bench median at a longer rep than the tuner's; the tuner's own short timings are
printed beside them, then its pick. Bytes are the family's work model, as the suite's % of peak.
Where the chosen plan's time goes, partial kernel against merge:
    python3 tools/probe_kernels.py paged gqa_decode triton SHAPE
"""

import sys

import torch
from triton.runtime.errors import OutOfResources
from triton.testing import do_bench

from kernels.paged import triton_paged
from variantbench import cases
from variantbench.catalog import Unsupported, family
from variantbench.device import measured_peaks

SHAPES = ("llama-3-8b-paged16-b1-kv128k", "llama-3-8b-paged16-b64-kv8k")
REP_MS = 100  # 20x the tuner's 5 ms: the reference its picks are judged by


def probe(case, peak):
    fam = family("paged")
    problem = fam.make_problem(case.variant, case.shape, device=torch.device("cuda"), dtype=case.dtype, seed=cases.SEED)
    p, nbytes = problem, fam.work(case.variant, problem)[1]

    def build(plan):
        return triton_paged.paged_launcher(p.q, p.k_pool, p.v_pool, p.page_table, p.seq_lens, p.page_size, plan=plan)

    def figures(ms):
        gbps = nbytes / ms / 1e6
        return f"{ms:.4f} ms {gbps:6.0f} GB/s {100 * gbps / peak:5.1f}%"

    print(f"{case.shape.name}: {nbytes / 1e6:.0f} MB moved, copy bound {nbytes / peak / 1e6:.4f} ms")
    expected = build(triton_paged.DEFAULT_PLAN)()
    tuned_plan, tuned = triton_paged.tune_plan(build)
    for plan in triton_paged.CANDIDATES:
        launcher = build(plan)
        try:
            torch.testing.assert_close(launcher(), expected, atol=2e-2, rtol=2e-2)
            ms = do_bench(launcher, rep=REP_MS, return_mode="median")
        except (OutOfResources, AssertionError) as error:  # a plan that does not fit or disagrees is a result too
            print(f"  {str(plan):16} {type(error).__name__}: {str(error).splitlines()[0][:100]}")
            continue
        tuner = f"tuner {tuned[plan]:.4f} ms" if plan in tuned else "tuner: launches as a plan above"
        mark = "  (default)" if plan == triton_paged.DEFAULT_PLAN else ""
        print(f"  {str(plan):16} {launcher.n_splits:4} splits  {figures(ms)}  {tuner}{mark}")
    print(f"  the tuner picks {tuned_plan}: {figures(tuned[tuned_plan])} in its own timing")


def main(shapes):
    if not torch.cuda.is_available():
        print("probe_paged: no CUDA GPU here; it times our paged decode's launch plans on one", file=sys.stderr)
        return 2
    try:  # every name resolved before the first timing: a misspelt one costs no GPU time
        probes = [cases.resolve("paged", "gqa_decode", "triton", shape, "cuda") for shape in shapes]
    except Unsupported as why:
        print(f"probe_paged: {why}", file=sys.stderr)
        return 2
    peak = measured_peaks("cuda")["gbps"]  # the suite's own copy peak, as its % of peak figures use
    print(f"copy peak {peak:.0f} GB/s; {len(triton_paged.CANDIDATES)} candidate plans")
    for case in probes:
        probe(case, peak)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or SHAPES))
