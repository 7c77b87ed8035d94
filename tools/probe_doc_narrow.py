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


# (batch, query heads, KV heads, length, document starts (B, S))
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
    want = triton_flash.forward_launcher(q, k, v, causal=True, doc_start=doc_start)()
    got = gluon_flash.forward_launcher(q, k, v, causal=True, doc_start=doc_start)()
    torch.cuda.synchronize()
    diff = (got.float() - want.float()).abs().amax(-1)  # (B, H, S)
    print(f"{name}: max difference {diff.max().item():.4g}, rows off by > 0.02: {(diff > 0.02).sum().item()} of "
          f"{diff.numel()}")
    bad = (diff > 0.02).nonzero().tolist()
    for b, h, p in bad[:24]:
        start = int(doc_start[b, p])
        print(f"  b{b} h{h} p{p}: {diff[b, h, p].item():.3g} (offset {p - start} into its document at {start}, "
              f"{(p - start) % 128} into its diagonal tile)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sanitize"]:
        tool = shutil.which("compute-sanitizer") or next(iter(glob.glob("/usr/local/cuda*/bin/compute-sanitizer")), None)
        if tool is None:
            sys.exit("probe_doc_narrow: no compute-sanitizer on this machine")
        done = subprocess.run([tool, "--tool", "memcheck", "--show-backtrace", "device", sys.executable, __file__,
                               sys.argv[2]], capture_output=True, text=True, timeout=400)
        print("\n".join((done.stdout + done.stderr).splitlines()[:80]))
    elif len(sys.argv) > 1:
        run(sys.argv[1])
    else:
        for name in CASES:
            done = subprocess.run([sys.executable, __file__, name], capture_output=True, text=True, timeout=120)
            print(done.stdout, end="")
            if done.returncode:
                print(f"{name}: exit {done.returncode}: {done.stderr.strip().splitlines()[-1]}")
