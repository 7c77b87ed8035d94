# Session 14's last 330 s of device time, on one nvidia-h200 (setup ~40 s, then this within 270 s):
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     bash tools/s14_last.sh; tar czf $OUT/results.tgz reports
# (15) The Gated DeltaNet decode step, ours beside fla's fused recurrent kernel, now that fla is given
# beta by keyword (3311c6e passed it where fla 0.6.0 takes gk: max error inf), re-timed apart.
# (16) Then every block's reference forward at prefill-b4-s4k, for as long as the budget lasts.
set -u
dest=reports/truth/last-$(git rev-parse --short HEAD) budget=265 show='^verdict|^ +(fla|triton|compiled) +ok|wrong|%|graph|MISMATCH|ERROR|asv finished'
mkdir -p "$dest"
vb="python3 -m variantbench"
source tools/budgeted.sh
step try-gdn-decode 60 $vb try gated_deltanet --shape qwen3-next-decode-b64 --json "$dest/try-gdn-decode.json"
step truth 45 python3 tools/try_truth.py --fused-only "$dest/try-gdn-decode.json"
step blocks-reference 160 $vb run --family block --tier full --shape prefill-b4-s4k --implementation reference \
  --no-precheck --bench 'BlockForward\.time'
grep -hE "us a call" "$dest/blocks-reference.log" | sed -E 's/.*(block\/[^ ]+).* ([0-9.]+ us a call).*/\1 \2/'
