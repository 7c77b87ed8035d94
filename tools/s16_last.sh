# Session 16's second lease (about 270 s of device time left): every block's reference as the fused
# block's speedup over it (issue 16's last figure), then bwd-speed's backward tiles (issue 17) with
# what is left. The references run a pair of blocks an invocation, cheap pairs first: a run publishes
# only once its benchmark is done, so a cut costs one pair, not all eight (llama-3-8b's is in the
# default tier's results, 4.307x at 4e7ef39).
#   run(carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; bash tools/s16_last.sh 230
set -u
stop=$((SECONDS + ${1:-230}))
root=reports/truth/s16-last-$(git rev-parse --short HEAD)
mkdir -p "$root"
for pair in "vit-l16 llama-3-8b-depth" "gemma-2-9b-local gemma-2-9b-global" "qwen3-30b-a3b mixtral-8x7b" \
            "qwen3-next deepseek-v3"; do
  left=$((stop - SECONDS - 60))  # the probe's first lines need about a minute
  [ "$left" -lt 30 ] && { echo "== references of $pair: skipped at ${SECONDS}s"; continue; }
  set -- $pair
  timeout "$left" python3 -m variantbench run --family block --tier full --shape prefill-b4-s4k \
    --implementation fused --no-precheck --bench BlockReferenceSpeedup --variant "$1" --variant "$2" \
    > "$root/reference-$1.log" 2>&1
  echo "== references of $pair: exit $? at ${SECONDS}s"
done
bwd=$(git rev-parse -q --verify origin/bwd-speed || git rev-parse -q --verify bwd-speed)
rm -rf /tmp/bwd && git worktree add -f /tmp/bwd "$bwd" > /dev/null 2>&1
left=$((stop - SECONDS))
[ "$left" -gt 20 ] && (cd /tmp/bwd && timeout "$left" python3 tools/probe_attention_backward.py gqa_8) \
  > "$root/probe-backward.log" 2>&1
echo "== probe: exit $? at ${SECONDS}s"
grep -vE "^\s*(File|\^)" "$root/probe-backward.log" | grep -E "ms|refused|fastest|Error" | head -20
mkdir -p "$OUT" && tar czf "$OUT/results.tgz" reports
