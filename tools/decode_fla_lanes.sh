# Two lanes on nvidia-h200-x2 for what session 13's x4 lanes could not show (issue 15), about 250 s:
#   run(kind="nvidia-h200-x2", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; bash tools/decode_fla_lanes.sh
# GPU 0: Gated DeltaNet, ours against fla side by side at 4k-64k tokens (fla's backward refuses on
#   Hopper under Triton 3.6, which made every fla case an error before: its forward is what is timed),
#   re-timed apart by do_bench (tools/try_truth.py, fused only).
# GPU 1: paged decode through asv now that a decode step is timed as CUDA-graph replays, beside an
#   independent graph loop of the same calls (try_truth's graph column).
set -u
root=reports/truth/decode-fla-$(git rev-parse --short HEAD)
mkdir -p "$root"
vb="python3 -m variantbench"
(
  export CUDA_VISIBLE_DEVICES=0 HOME=/tmp/home-gdn
  mkdir -p "$HOME"
  timeout 170 $vb try gated_deltanet --shape qwen3-next-t4k --shape qwen3-next-t16k --shape qwen3-next-t32k \
    --shape qwen3-next-t64k --json "$root/try-gdn.json" > "$root/try-gdn.log" 2>&1
  echo "== try-gdn: exit $? at ${SECONDS}s"
  timeout 110 python3 tools/try_truth.py --fused-only "$root/try-gdn.json" > "$root/truth-gdn.log" 2>&1
  echo "== truth-gdn: exit $? at ${SECONDS}s"
) &
(
  export CUDA_VISIBLE_DEVICES=1 HOME=/tmp/home-paged
  mkdir -p "$HOME"
  timeout 150 $vb run --family paged --tier full --shape llama-3-8b-paged16-b64-kv8k \
    --shape llama-3-8b-paged16-b1-kv128k --no-precheck --bench 'PagedForward\.time|PagedTimingMode' \
    > "$root/run-paged.log" 2>&1
  echo "== run-paged: exit $? at ${SECONDS}s"
  timeout 60 $vb try gqa_decode --shape llama-3-8b-paged16-b64-kv8k --shape llama-3-8b-paged16-b1-kv128k \
    --json "$root/try-paged.json" > "$root/try-paged.log" 2>&1
  echo "== try-paged: exit $? at ${SECONDS}s"
  timeout 60 python3 tools/try_truth.py --fused-only "$root/try-paged.json" > "$root/truth-paged.log" 2>&1
  echo "== truth-paged: exit $? at ${SECONDS}s"
) &
wait
grep -hE "^verdict|ERROR|^ +(fla|triton|sdpa|flex) +ok" "$root/try-gdn.log" "$root/try-paged.log" | head -40
cat "$root/truth-gdn.log" "$root/truth-paged.log" 2>/dev/null
grep -E "μs|ms|graph|decode step" "$root/run-paged.log" | grep -v "^\s*\[ *[0-9.]*%\] ·· " | cut -c1-220 | tail -25
tar czf "$OUT/results.tgz" reports
