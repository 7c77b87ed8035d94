# The open GPU items on one 4-GPU machine (nvidia-h200-x4), in lanes side by side so that one device
# session (1800 s) holds them all; on two GPUs the 4-rank step is left out and the lanes follow:
#   git bundle create .vbgit.bundle main attention-bwd-tune
#   run(kind="nvidia-h200-x4", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/x4_lanes.sh' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# What session 12 (57a9be4) left unmeasured, by issue:
# First, on all four GPUs (16): the split blocks' own figures, parallel efficiency and the collectives'
#   share (BlockParallel; 57a9be4's step ran out of time building each split block twice); (18) the two
#   torchrun "nodes"' bus bandwidths re-timed as raw NCCL (tools/comms_truth.py --nodes 2).
# GPUs 0-1 (16): the same over two ranks; then every block's forward+backward through fused (the MoE
#   recipes' too, now that the moe family has a backward) and its forward at the decode shape.
# GPU 2 (15): Gated DeltaNet, ours (kernels-s12's four kernels, merged) against fla side by side at 4k,
#   16k, 32k and 64k tokens, re-timed apart; paged decode with the plan tuner, re-timed as a graph loop;
#   then the default tier alone, timed whole.
# GPU 3 (17): our attention forward and forward+backward against SDPA (cuDNN) and Flex at
#   llama-3-8b-s4k, with their figures; branch attention-bwd-tune gated; softcap and MoE decode tried.
# One GPU set per lane (CUDA_VISIBLE_DEVICES), so each records under the machine its GPU count names
# (nvidia-h200, nvidia-h200-x2, nvidia-h200-x4). Each lane has its own HOME: asv keeps its machine file
# there (~/.asv-machine.json, rewritten by every run) and lanes must not race on it.
set -u
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
split_blocks() {  # split_blocks LIMIT: BlockParallel over every GPU the lane sees
  step parallel "$1" $vb run --family block --tier full --shape prefill-b4-s4k --variant llama-3-8b \
    --variant qwen3-30b-a3b --implementation tensor_parallel --implementation sequence_parallel \
    --implementation sequence_parallel_overlapped --implementation sequence_parallel_symm_mem --no-precheck \
    --bench 'BlockParallel'
}
two_ranks_then_training() {
  local budget=$1 dest=$root/x2 show='MISMATCH|ERROR|asv finished|Traceback'
  mkdir -p "$dest"
  source tools/budgeted.sh
  split_blocks 560
  # one GPU of the two, so the single-GPU figures join nvidia-h200's history
  local one="env CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES%%,*}"
  step fwd-bwd 600 $one $vb run --family block --tier full --shape prefill-b4-s4k --implementation fused --no-precheck \
    --bench 'BlockForwardBackward\.time'
  # issue 16: every recipe's forward at its decode shape (64 sequences, one token over 4k cached)
  step decode 420 $one $vb run --family block --tier full --shape decode-b64-kv4k --implementation fused --no-precheck \
    --bench 'BlockForward\.time|BlockMetrics\.track_(tflops|gbps|percent|ratio_to)'
}
linear_then_paged() {
  local budget=$1 dest=$root/linear-paged show='^verdict|^try:|MISMATCH|ERROR|diff'
  mkdir -p "$dest"
  source tools/budgeted.sh
  # issues 15, 16: this session's backwards checked on the GPU first (fla's Gated DeltaNet, SDPA's and
  # Flex's MLA prefill, grouped_mm's MoE: gradients against float64, never run on a GPU before)
  show='passed|mismatch|error|MISMATCH'
  step check-backward 420 $vb check --family linear --family mla --family moe --tier full --shape qwen3-next-t4k \
    --shape deepseek-v3-mla-prefill-s4k --shape mixtral-8x7b-prefill-t8k-zipf
  show='^verdict|^try:|MISMATCH|ERROR|diff'
  step try-gdn 420 $vb try gated_deltanet --shape qwen3-next-t4k --shape qwen3-next-t16k --shape qwen3-next-t32k \
    --shape qwen3-next-t64k --json "$dest/try-gdn.json"
  step try-paged 150 $vb try gqa_decode --shape llama-3-8b-paged16-b64-kv8k --shape llama-3-8b-paged16-b1-kv128k \
    --json "$dest/try-paged.json"
  step truth 240 python3 tools/try_truth.py "$dest/try-gdn.json" "$dest/try-paged.json"
  step probe-paged 120 python3 tools/probe_paged.py llama-3-8b-paged16-b1-kv128k llama-3-8b-paged16-b64-kv8k
  default_tier
}
default_tier() {  # issues 14-16: HEAD's default tier timed whole (57a9be4's: 587 s beside three lanes)
  local t0=$SECONDS
  if [ $((SECONDS + 300)) -lt "$budget" ]; then
    timeout 720 $vb run
    echo "== default tier: exit $? in $((SECONDS - t0))s"
  fi
}
attention_lane() {
  local budget=$1 dest=$root/attention show='^verdict|^try:|MISMATCH|ERROR|asv finished|diff'
  mkdir -p "$dest"
  source tools/budgeted.sh
  # issue 17's goals side by side: forward and forward+backward, ours against cuDNN and Flex, with TFLOP/s
  step attention 420 $vb run --family attention --tier full --shape llama-3-8b-s4k --no-precheck \
    --variant gqa_8 --variant causal --variant softcap_50 --variant alibi --variant sliding_window_1024 \
    --bench 'AttentionForward\.time|AttentionForwardBackward\.time|AttentionMetrics\.track_tflops'
  # issue 17: branch attention-bwd-tune (the backward's tiles autotuned, four a kernel) against HEAD
  local bwd_branch
  bwd_branch=$(git rev-parse --verify -q origin/attention-bwd-tune || git rev-parse --verify -q attention-bwd-tune)
  show='faster|slower|same|MISMATCH|exit'
  [ -n "$bwd_branch" ] && step gate-bwd 480 $vb gate "$(git rev-parse HEAD)" "$bwd_branch" --factor 1.05 \
    --machine nvidia-h200 --family attention --variant gqa_8 --variant softcap_50 --variant sliding_window_1024 \
    --variant document --implementation triton --shape llama-3-8b-s4k --tier full --results "$dest/gate-bwd-results" \
    --bench 'AttentionForwardBackward\.time_forward_backward' --summary reports/gate/attention-bwd-tune-h200.md
  show='^verdict|^try:|MISMATCH|ERROR|diff'
  step try-attention 200 $vb try softcap_50 --shape llama-3-8b-s4k --json "$dest/try-softcap.json"
  step try-moe-decode 150 $vb try softmax_topk --shape deepseek-v3-decode-t16-zipf \
    --shape mixtral-8x7b-decode-t16-zipf --json "$dest/try-moe-decode.json"
  step truth 150 python3 tools/try_truth.py "$dest/try-softcap.json" "$dest/try-moe-decode.json"
}
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 4 ]; then
  dest=$root/x4 show='MISMATCH|ERROR|asv finished|parallel' budget=720
  mkdir -p "$dest"
  source tools/budgeted.sh
  split_blocks 560
  # issue 18: session 11's two torchrun "nodes" x 2 GPUs, 64 MiB collectives at ~5 GB/s bus over
  # sockets, re-timed apart (CUDA graphs of raw NCCL calls), beside one 4-rank node
  show='GB/s|all_|reduce'
  step nodes-truth 150 python3 tools/comms_truth.py --nodes 2 --sizes 67108864 --ops all_reduce,all_gather,reduce_scatter \
    --calls 2,5
  step node-truth 60 python3 tools/comms_truth.py --sizes 67108864 --ops all_reduce,all_gather,reduce_scatter --calls 10,50
  lane x2-training 0,1 two_ranks_then_training 1600 &
  lane linear-paged 2 linear_then_paged 1600 &
  lane attention 3 attention_lane 1600 &
  wait
elif [ "$gpus" -eq 1 ]; then  # one GPU: the single-GPU lanes one after the other
  lane linear-paged 0 linear_then_paged 800
  lane attention 0 attention_lane 1600
else  # two GPUs: the two-rank lane, then the single-GPU lanes side by side
  lane x2-training 0,1 two_ranks_then_training 1000
  lane linear-paged 0 linear_then_paged 1600 &
  lane attention 1 attention_lane 1600 &
  wait
fi
