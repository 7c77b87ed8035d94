# The open GPU items on one 4-GPU machine (nvidia-h200-x4), in lanes side by side so that one device
# session (1800 s) holds them all; on two GPUs the block lane comes after the first two and the
# 4-rank steps are left out:
#   git bundle create .vbgit.bundle main kernels-s11
#   run(kind="nvidia-h200-x4", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh && source tools/gpu_detached.sh \
#     && workdir && detach lanes 'bash tools/x4_lanes.sh' && await lanes 540     (then `await lanes 560` within 30 s)
# GPU 0, issues 14, 15: HEAD's default tier alone on its GPU, timed whole: the figure those issues ask
#   for (ec6ebbf's took 644 s; since then torch and triton load in asv's forkserver, and DSA
#   through SDPA over gathered keys is nightly).
# GPU 1, issues 14, 15, 17: DSA at 64k, MLA prefill against gqa_8, the paged decode shapes, Gated
#   DeltaNet against gqa_8 at 16k, 32k and 64k, softcap_50 through ours, every `try`
#   re-timed apart (tools/try_truth.py); then branch kernels-s11 (two kernel changes) gated against main.
# GPUs 2-3 (on two GPUs: 0-1 after the lanes above), issues 16, 18: every block recipe's forward,
#   forward+backward and composition overhead through fused and liger on one GPU, Mixtral's block
#   `try` re-timed apart, on two GPUs rank 1 through torchrun (tools/torchrun_x2.sh), then the rest of
#   the split blocks' check.
# Then, on four, issues 16 and 18: the split blocks over 4 ranks; the collectives over 2 torchrun
#   "nodes" of 2 GPUs beside one 4-rank run (tools/torchrun_nodes.sh).
# One GPU set per lane (CUDA_VISIBLE_DEVICES), so each records under the machine its GPU count names
# (nvidia-h200, nvidia-h200-x2, nvidia-h200-x4). Each lane has its own HOME: asv keeps its machine
# file there (~/.asv-machine.json, rewritten by every run) and lanes must not race on it.
set -u
budget=${BUDGET:-1500}
root=reports/truth/lanes-$(git rev-parse --short HEAD)
mkdir -p "$root"
vb="python3 -m variantbench"
lane() {  # lane NAME DEVICES COMMAND...: the command on those GPUs, its log in $root/NAME.log
  local name=$1 devices=$2  # not `gpus`: the lanes read the machine's GPU count by that name
  shift 2
  mkdir -p "/tmp/home-$name"
  (export CUDA_VISIBLE_DEVICES=$devices HOME=/tmp/home-$name; "$@") > "$root/$name.log" 2>&1
  echo "== lane $name (GPUs $devices): exit $? at ${SECONDS}s"
}
default_tier() {
  local t0=$SECONDS
  timeout 780 $vb run
  echo "== default tier: exit $? in $((SECONDS - t0))s"
}
attention_and_moe() {  # what issues 14, 15 and 17 still lack, each `try` re-timed apart by do_bench
  local budget=880 dest=$root/attention show='^verdict|^try:|MISMATCH|ERROR|passed|median| ms|GB/s|diff'
  mkdir -p "$dest"
  source tools/budgeted.sh
  # DSA at 64k (session 10 fixed its memory and Flex's mask there; checked, not timed); MLA prefill per
  # implementation against gqa_8 per useful work; the paged decode shapes (replays against a graph loop)
  step try-dsa-64k 420 $vb try dsa_topk_2048 --shape llama-3-8b-s64k --json "$dest/try-dsa-64k.json"
  step try-mla-prefill 150 $vb try mla --shape deepseek-v3-mla-prefill-s4k --against attention/gqa_8@llama-3-8b-s4k \
    --json "$dest/try-mla-prefill.json"
  step try-paged 150 $vb try gqa_decode --shape llama-3-8b-paged16-b64-kv8k --shape llama-3-8b-paged16-b1-kv128k \
    --json "$dest/try-paged.json"
  # Gated DeltaNet's wall time against dense causal gqa_8 at the same tokens, one sequence each (at 4k
  # the attention grid has 4 sequences, llama-3-8b-s4k)
  local n
  for n in 16k 32k 64k; do
    step "try-gdn-$n" 90 $vb try gated_deltanet --shape "qwen3-next-t$n" --against "attention/gqa_8@llama-3-8b-s$n" \
      --json "$dest/try-gdn-$n.json"
  done
  step try-softcap 100 $vb try softcap_50 --shape llama-3-8b-s4k --json "$dest/try-softcap.json"
  step truth 240 python3 tools/try_truth.py "$dest"/try-*.json
  # issues 15, 17: where ours loses to grouped_mm at DeepSeek-V3 decode (the router, suspected); then
  # branch kernels-s11 gated against main: moe-router-split (the router's logits spread over the GPU)
  # and gdn-wy-full-tile (our GDN's W as two 64 x 64 products); every measured case checked in setup
  step probe-moe 60 python3 tools/probe_kernels.py moe softmax_topk triton,grouped_mm deepseek-v3-decode-t16-zipf
  local branch  # gpu_setup.sh's clone of the bundle holds it as origin/kernels-s11
  branch=$(git rev-parse --verify -q origin/kernels-s11 || git rev-parse kernels-s11)
  step gate-kernels 360 $vb gate "$(git rev-parse HEAD)" "$branch" --factor 1.05 --machine nvidia-h200 \
    --family moe --family linear --implementation triton --shape deepseek-v3-decode-t16-zipf \
    --shape mixtral-8x7b-decode-t16-zipf --shape deepseek-v3-prefill-t4k-zipf --shape qwen3-next-t16k \
    --shape qwen3-next-t64k --tier full --results "$dest/gate-kernels-results" \
    --bench 'MoEForward\.time_forward|LinearForward\.time_forward' --summary reports/gate/kernels-s11-h200.md
}
blocks() {  # issue 16's single-GPU figures (on the lane's first GPU), Mixtral's try re-timed apart;
  # on two GPUs rank 1 through torchrun; then the rest of the split blocks' check
  local budget=${1:-850} dest=$root/block show='^verdict|^try:|MISMATCH|ERROR|passed|median|asv finished|torchrun|launcher'
  mkdir -p "$dest"
  source tools/budgeted.sh
  step block-figures 300 env CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES%%,*}" $vb run --family block --tier full \
    --shape prefill-b4-s4k --implementation fused --implementation liger --no-precheck \
    --bench 'BlockForward\.|BlockForwardBackward\.time|BlockComposition'
  # issue 18: the sequence-parallel split plain, overlapped by us, and through torch's symmetric memory
  step run-split 240 $vb run --family block --tier full --shape prefill-b4-s4k --variant llama-3-8b \
    --variant qwen3-30b-a3b --implementation sequence_parallel --implementation sequence_parallel_overlapped \
    --implementation sequence_parallel_symm_mem --no-precheck --bench 'BlockForward\.|BlockParallel'
  step try-mixtral 150 $vb try mixtral-8x7b --shape prefill-b4-s4k --json "$dest/try-mixtral.json"
  step truth 60 python3 tools/try_truth.py "$dest/try-mixtral.json"
  [ "$gpus" -ge 4 ] || step torchrun-x2 420 bash tools/torchrun_x2.sh "$dest/torchrun"  # its timeouts: 400 s
  step check-split 400 $vb check --family block --tier full --implementation tensor_parallel \
    --implementation sequence_parallel --implementation sequence_parallel_overlapped \
    --implementation sequence_parallel_symm_mem
}
gpus=$(nvidia-smi -L | wc -l)
lane default-tier 0 default_tier &
lane attention-moe 1 attention_and_moe &
if [ "$gpus" -ge 4 ]; then
  lane block 2,3 blocks &
  wait
else
  wait
  lane block 0,1 blocks "$((SECONDS + 640))"  # on two GPUs the torchrun step and the check rarely fit
  exit
fi
dest=$root/x4
show='^verdict|MISMATCH|ERROR|passed|parallel|asv finished|busbw|nodes'
mkdir -p "$dest"
source tools/budgeted.sh
step run-x4 240 $vb run --family block --tier full --shape prefill-b4-s4k --variant llama-3-8b \
  --variant qwen3-30b-a3b --implementation fused --implementation tensor_parallel --implementation sequence_parallel \
  --implementation sequence_parallel_overlapped --implementation sequence_parallel_symm_mem --no-precheck \
  --bench 'BlockForward\.|BlockParallel'
step torchrun-nodes 420 bash tools/torchrun_nodes.sh "$dest"
