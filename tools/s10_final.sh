# Ran once, at 5331386 (its probe_gdn.py is now tools/probe_kernels.py linear gated_deltanet triton,fla ...).
# Session 10's last device call, two GPUs side by side (nvidia-h200-x2, ~400 s after setup):
#   git bundle create .vbgit.bundle main kernels-s10
#   run(kind="nvidia-h200-x2", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; bash tools/s10_final.sh
# GPU 0, issue 14: block_topk_16 at 64k through every implementation (`try`: Flex autotunes there),
#   re-timed apart by do_bench.
# GPU 1, issues 15, 14, 17: branch kernels-s10 (our Gated DeltaNet's block inverse, tuned kernels and
#   bf16 states; our MLA decode's tiles and splits) gated against main at factor 1.05, every measured
#   case checked in its setup; the branch's kernels profiled beside fla's; then DSA at 64k checked
#   through Flex (its selection read as packed bits) and ours (indices listed a chunk at a time); then
#   the liger block peer checked.
set -u
root=reports/truth/s10-final-$(git rev-parse --short HEAD)
mkdir -p "$root"
vb="python3 -m variantbench"
branch=$(git rev-parse --verify -q origin/kernels-s10 || git rev-parse kernels-s10)
sparse() {
  local budget=390 dest=$root/sparse show='^verdict|^try:|MISMATCH|ERROR|passed| ms|diff'
  source tools/budgeted.sh
  mkdir -p "$dest"
  step try-block-topk-64k 330 $vb try block_topk_16 --shape llama-3-8b-s64k --json "$dest/try-block-topk-64k.json"
  step truth 60 python3 tools/try_truth.py "$dest/try-block-topk-64k.json"
}
kernels() {
  local budget=400 dest=$root/kernels show='^verdict|MISMATCH|ERROR|passed|faster|slower|same| ms a call|  [0-9.]+ ms'
  source tools/budgeted.sh
  mkdir -p "$dest"
  step gate 250 $vb gate "$(git rev-parse HEAD)" "$branch" --factor 1.05 --machine nvidia-h200 \
    --family linear --family mla --implementation triton --shape qwen3-next-t16k --shape qwen3-next-t64k \
    --shape deepseek-v3-mla-decode-b64-kv8k --shape deepseek-v3-mla-decode-b64-kv32k --tier full \
    --results "$dest/gate-results" --bench 'LinearForward\.time_forward|MLAForward\.time_forward' \
    --summary reports/gate/kernels-s10-h200.md
  git worktree add -q /tmp/k10 "$branch"
  step probe-gdn 60 env PYTHONPATH=/tmp/k10 python3 /tmp/k10/tools/probe_gdn.py qwen3-next-t16k qwen3-next-t64k
  step check-dsa-64k 100 $vb check --family attention --variant dsa_topk_2048 --implementation flex \
    --implementation triton --shape llama-3-8b-s64k
  step check-liger 60 $vb check --family block --implementation liger --variant llama-3-8b --shape prefill-b4-s4k
}
(export CUDA_VISIBLE_DEVICES=0 HOME=/tmp/home-sparse; mkdir -p $HOME; sparse) > "$root/sparse.log" 2>&1 &
(export CUDA_VISIBLE_DEVICES=1 HOME=/tmp/home-kernels; mkdir -p $HOME; kernels) > "$root/kernels.log" 2>&1 &
wait
cat "$root/sparse.log" "$root/kernels.log"
tar czf "$OUT/results.tgz" reports
