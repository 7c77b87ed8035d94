"""Where doc-narrow's half diagonals go wrong (session 38): small document layouts through the Gluon forward
against our Triton forward, each case in its own process (an illegal address poisons the process that meets it),
printing per case the largest difference and, for the worst rows, (batch, head, position), the position's offset
into its document and into its item's diagonal key tile:
    python tools/probe_doc_narrow.py            (every case, each in a subprocess)
    python tools/probe_doc_narrow.py CASE       (one case in this process)
    python tools/probe_doc_narrow.py --sanitize CASE   (one case under compute-sanitizer's memcheck, which names the
                                                        instruction an illegal address comes from)"""

import glob
import shutil
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from variantbench.catalog.attention import document_starts  # noqa: E402


def starts(lengths):
    return torch.cat([torch.full((n,), sum(lengths[:i]), dtype=torch.int32) for i, n in enumerate(lengths)])


# (batch, query heads, KV heads, length, document starts (B, S)); "one-doc-N": a first document of N rows (the
# rest of the sequence a second), "packP": P query heads a KV head, so P heads an item (gluon_walk.document_pack)
CASES = {
    "one-doc-128-pack4": (1, 4, 1, 128, lambda: starts([128]).reshape(1, -1)),
    "one-doc-64-pack4": (1, 4, 1, 128, lambda: starts([64, 64]).reshape(1, -1)),
    "one-doc-32-pack4": (1, 4, 1, 128, lambda: starts([32, 96]).reshape(1, -1)),
    "one-doc-128-pack2": (1, 2, 1, 128, lambda: starts([128]).reshape(1, -1)),
    "two-walk-pack4": (1, 4, 1, 256, lambda: starts([256]).reshape(1, -1)),
    "odd-docs-pack4": (1, 4, 1, 256, lambda: starts([40, 216]).reshape(1, -1)),
    "two-packs-pack4": (1, 8, 2, 128, lambda: starts([128]).reshape(1, -1)),
    "2x8-grouped-by-4": (2, 8, 2, 384, lambda: document_starts(2, 384, seed=16)),
}


def run(name):
    from kernels.attention import gluon_flash, triton_flash
    batch, hq, hkv, seq, doc = CASES[name]
    doc_start = doc().cuda()
    gen = torch.Generator(device="cuda").manual_seed(16)
    q, k, v = (torch.randn(batch, h, seq, 128, device="cuda", generator=gen, dtype=torch.bfloat16)
               for h in (hq, hkv, hkv))
    want_lse, lse = (torch.full((batch, hq, seq), float("nan"), device="cuda") for _ in range(2))
    want = triton_flash.forward_launcher(q, k, v, causal=True, doc_start=doc_start, lse=want_lse)()
    got = gluon_flash.forward_launcher(q, k, v, causal=True, doc_start=doc_start, lse=lse)()
    torch.cuda.synchronize()
    diff = (got.float() - want.float()).abs().amax(-1)  # (B, H, S)
    lse_diff = (lse - want_lse).abs().nan_to_num(float("inf")).max().item()  # a row left unwritten reads inf
    print(f"{name}: max difference {diff.max().item():.4g}, rows off by > 0.02: {(diff > 0.02).sum().item()} of "
          f"{diff.numel()}; lse's max difference {lse_diff:.3g}")
    bad = (diff > 0.02).nonzero().tolist()
    for b, h, p in bad[:24]:
        start = int(doc_start[b, p])
        print(f"  b{b} h{h} p{p}: {diff[b, h, p].item():.3g} (offset {p - start} into its document at {start}, "
              f"{(p - start) % 128} into its diagonal tile)")


def sweep():
    for name in CASES:
        try:
            done = subprocess.run([sys.executable, __file__, name], capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:  # a ring the producer and consumers walk apart hangs
            print(f"{name}: no answer in 120 s (a hang)")
            continue
        print(done.stdout, end="")
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
            print(f"{name}: exit {done.returncode}: {last}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sanitize"] and (len(sys.argv) != 3 or sys.argv[2] not in CASES):
        sys.exit(f"usage: probe_doc_narrow.py --sanitize CASE (one of {', '.join(CASES)})")
    if sys.argv[1:2] == ["--sanitize"]:
        tool = (shutil.which("compute-sanitizer")
                or next(iter(glob.glob("/usr/local/cuda*/bin/compute-sanitizer")), None))
        if tool is None:
            sys.exit("probe_doc_narrow: no compute-sanitizer on this machine")
        done = subprocess.run([tool, "--tool", "memcheck", "--show-backtrace", "device", sys.executable, __file__,
                               sys.argv[2]], capture_output=True, text=True, timeout=400)
        print("\n".join((done.stdout + done.stderr).splitlines()[:80]))
    elif len(sys.argv) > 1:
        if sys.argv[1] not in CASES:
            sys.exit(f"probe_doc_narrow: no case {sys.argv[1]!r}; the cases: {', '.join(CASES)}")
        run(sys.argv[1])
    else:
        sweep()
