# The open GPU items on one 4-GPU machine (nvidia-h200-x4), in lanes side by side so that one device
# session (1800 s) holds them all; on two GPUs the block lanes follow the first two and the 4-rank
# step is left out:
#   git bundle create .vbgit.bundle main kernels-s12
#   run(kind="nvidia-h200-x4", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/x4_lanes.sh' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# First, on all four GPUs, issues 16 and 18: the split blocks over 4 ranks (tensor, sequence, sequence
#   overlapped by us and through torch's symmetric memory), every rank's output checked in setup. Then:
# GPU 0, issues 14, 15, 16, 17: HEAD's default tier alone on its GPU, timed whole (86c9ee3's took 670 s,
#   120 of them Flex failing MLA's decode again in 12 track processes, now remembered once; the
#   llama-3-8b block joined it since); the paged decode shapes tried, every call re-timed apart and as
#   a CUDA-graph loop (tools/try_truth.py); DeepSeek-V3's MoE prefill tried against its roofline.
# GPU 1, issues 15, 17: Gated DeltaNet against gqa_8 at 16k and at 4 x 4k tokens, re-timed apart; the
#   paged plans probed; kernels-s12's MoE router and paged plan tuner gated against HEAD.
# GPU 2, issue 16: every block recipe through fused: forward and its figures, forward+backward,
#   composition overhead.
# GPU 3, issues 16, 17, 15: four recipes through liger (its wheel is on PYTHONPATH, which asv now
#   passes on); kernels-s12's attention changes gated; llama-3-8b's block `try` re-timed apart;
#   kernels-s12's Gated DeltaNet gated.
# One GPU set per lane (CUDA_VISIBLE_DEVICES), so each records under the machine its GPU count names
# (nvidia-h200, nvidia-h200-x4). Each lane has its own HOME: asv keeps its machine file there
# (~/.asv-machine.json, rewritten by every run) and lanes must not race on it.
set -u
root=reports/truth/lanes-$(git rev-parse --short HEAD)
mkdir -p "$root"
vb="python3 -m variantbench"
# gpu_setup.sh's clone of the bundle holds the branch as origin/kernels-s12
branch=$(git rev-parse --verify -q origin/kernels-s12 || git rev-parse kernels-s12)
lane() {  # lane NAME DEVICES COMMAND...: the command on those GPUs, its log in $root/NAME.log
  local name=$1 devices=$2  # not `gpus`: the lanes read the machine's GPU count by that name
  shift 2
  mkdir -p "/tmp/home-$name"
  (export CUDA_VISIBLE_DEVICES=$devices HOME=/tmp/home-$name; "$@") > "$root/$name.log" 2>&1
  echo "== lane $name (GPUs $devices): exit $? at ${SECONDS}s"
}
default_tier_then_paged() {  # budget: seconds since the script started past which no step starts
  local budget=$1 dest=$root/paged show='^verdict|^try:|MISMATCH|ERROR|passed|median| ms|diff'
  local t0=$SECONDS
  timeout 720 $vb run
  echo "== default tier: exit $? in $((SECONDS - t0))s"
  mkdir -p "$dest"
  source tools/budgeted.sh
  step try-paged 150 $vb try gqa_decode --shape llama-3-8b-paged16-b64-kv8k --shape llama-3-8b-paged16-b1-kv128k \
    --json "$dest/try-paged.json"
  step truth 120 python3 tools/try_truth.py "$dest/try-paged.json"
  # issue 17: DeepSeek-V3's MoE layer at prefill against its roofline, per implementation (44% in November)
  step try-moe-prefill 150 $vb try sigmoid_grouped_topk --shape deepseek-v3-prefill-t4k-zipf \
    --json "$dest/try-moe-prefill.json"
  # which tile each of our attention kernel's tuning keys chose here, cold (the default tier tunes 4
  # configs for each of 11 variants, in the precheck, one at a time)
  cp -r "$HOME/.triton/cache/variantbench-autotune" "$root/autotune-choices" 2>/dev/null
}
linear_then_kernels() {
  local budget=$1 dest=$root/kernels show='^verdict|^try:|MISMATCH|ERROR|passed|faster|slower|GB/s|picks|diff'
  mkdir -p "$dest"
  source tools/budgeted.sh
  # issue 15: Gated DeltaNet's wall time against dense causal gqa_8 at the same tokens (86c9ee3's 16k try
  # ran out of its 90 s compiling; 4k as four sequences, llama-3-8b-s4k's tokens)
  step try-gdn-16k 240 $vb try gated_deltanet --shape qwen3-next-t16k --against attention/gqa_8@llama-3-8b-s16k \
    --json "$dest/try-gdn-16k.json"
  step try-gdn-4k 150 $vb try gated_deltanet --shape qwen3-next-b4-t4k --against attention/gqa_8@llama-3-8b-s4k \
    --json "$dest/try-gdn-4k.json"
  step truth 150 python3 tools/try_truth.py "$dest/try-gdn-16k.json" "$dest/try-gdn-4k.json"
  # issues 15, 17: kernels-s12's paged plan tuner (probed first) and MoE router against HEAD
  step probe-paged 120 python3 tools/probe_paged.py llama-3-8b-paged16-b1-kv128k llama-3-8b-paged16-b64-kv8k
  step gate-kernels 420 $vb gate "$(git rev-parse HEAD)" "$branch" --factor 1.05 --machine nvidia-h200 \
    --family moe --family paged --implementation triton --shape deepseek-v3-decode-t16-zipf \
    --shape mixtral-8x7b-decode-t16-zipf --shape deepseek-v3-prefill-t4k-zipf --shape llama-3-8b-paged16-b64-kv8k \
    --shape llama-3-8b-paged16-b1-kv128k --tier full --results "$dest/gate-kernels-results" \
    --bench 'MoEForward\.time_forward|PagedForward\.time_forward' --summary reports/gate/kernels-s12-h200.md
}
blocks_fused() {  # issue 16: per recipe through fused: forward with its figures (TFLOP/s, roofline, ratio
  # to llama-3-8b's block), forward+backward, composition overhead
  local budget=$1 dest=$root/block-fused show='MISMATCH|ERROR|asv finished|Traceback'
  mkdir -p "$dest"
  source tools/budgeted.sh
  step forward 360 $vb run --family block --tier full --shape prefill-b4-s4k --implementation fused --no-precheck \
    --bench 'BlockForward\.time|BlockMetrics\.|BlockPeakMemory'
  step fwd-bwd 420 $vb run --family block --tier full --shape prefill-b4-s4k --implementation fused --no-precheck \
    --bench 'BlockForwardBackward\.time'
  step composition 420 $vb run --family block --tier full --shape prefill-b4-s4k --implementation fused --no-precheck \
    --bench 'BlockComposition'
}
blocks_liger_then_gates() {
  local budget=$1 dest=$root/block-liger show='^verdict|^try:|MISMATCH|ERROR|asv finished|median|diff'
  mkdir -p "$dest"
  source tools/budgeted.sh
  # liger-kernel's pieces (norms, SwiGLU/GeGLU, RoPE) in a dense, a sandwich-norm, an MoE and an encoder block
  step liger 330 $vb run --family block --tier full --shape prefill-b4-s4k --implementation liger --no-precheck \
    --variant llama-3-8b --variant gemma-2-9b-global --variant qwen3-30b-a3b --variant vit-l16 \
    --bench 'BlockForward\.time|BlockForwardBackward\.time|BlockMetrics\.'
  # issue 17: kernels-s12's softcap fold and backward's row-block skip against HEAD, forward and
  # forward+backward; every case checked against float64 in its setup
  show='faster|slower|same|MISMATCH|exit'
  step gate-attention 300 $vb gate "$(git rev-parse HEAD)" "$branch" --factor 1.05 --machine nvidia-h200 \
    --family attention --variant softcap_50 --variant alibi --variant gqa_8 --implementation triton \
    --shape llama-3-8b-s4k --tier full --results "$dest/gate-attention-results" \
    --bench 'AttentionForward\.time_forward|AttentionForwardBackward\.time_forward_backward' \
    --summary reports/gate/kernels-s12-attention-h200.md
  # issue 16: a block's figures re-timed apart (every implementation of llama-3-8b's)
  show='^verdict|^try:|MISMATCH|ERROR|diff'
  step try-block 150 $vb try llama-3-8b --shape prefill-b4-s4k --json "$dest/try-block.json"
  step truth 60 python3 tools/try_truth.py "$dest/try-block.json"
  # issue 15: kernels-s12's Gated DeltaNet (four kernels; its first case tunes 36 configs)
  show='faster|slower|same|MISMATCH|exit'
  step gate-linear 330 $vb gate "$(git rev-parse HEAD)" "$branch" --factor 1.05 --machine nvidia-h200 \
    --family linear --implementation triton --shape qwen3-next-t16k --shape qwen3-next-t64k --tier full \
    --results "$dest/gate-linear-results" --bench 'LinearForward\.time_forward' \
    --summary reports/gate/kernels-s12-linear-h200.md
}
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 4 ]; then
  # First, on all four (issues 16, 18): the split blocks over 4 ranks, every rank's output checked in
  # setup; 86c9ee3's step ran out of its 240 s before asv published
  dest=$root/x4 show='MISMATCH|ERROR|asv finished|parallel' budget=400
  mkdir -p "$dest"
  source tools/budgeted.sh
  step run-x4 400 $vb run --family block --tier full --shape prefill-b4-s4k --variant llama-3-8b \
    --variant qwen3-30b-a3b --implementation fused --implementation tensor_parallel --implementation sequence_parallel \
    --implementation sequence_parallel_overlapped --implementation sequence_parallel_symm_mem --no-precheck \
    --bench 'BlockForward\.|BlockParallel'
  lane default-paged 0 default_tier_then_paged 1550 &
  lane kernels 1 linear_then_kernels 1550 &
  lane block-fused 2 blocks_fused 1550 &
  lane block-liger 3 blocks_liger_then_gates 1550 &
  wait
elif [ "$gpus" -eq 1 ]; then  # one GPU: the default tier, the tries and the kernels' gates, no blocks
  lane default-paged 0 default_tier_then_paged 900
  lane kernels 0 linear_then_kernels 1500
else  # two GPUs: the block lanes after the first two, with what is left
  lane default-paged 0 default_tier_then_paged 1050 &
  lane kernels 1 linear_then_kernels 1050 &
  wait
  lane block-fused 0 blocks_fused 1500 &
  lane block-liger 1 blocks_liger_then_gates 1500 &
  wait
fi
