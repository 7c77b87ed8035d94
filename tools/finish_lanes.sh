# What issues 15, 16 and 18 still lack after session 13, on one nvidia-h200-x4 or, where only two GPUs
# are lent, one nvidia-h200-x2 (about 25 minutes held either way):
#   git bundle create .vbgit.bundle main
#   run(kind=..., carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/finish_lanes.sh' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# First on every GPU (18): the comms family over two torchrun "nodes" (2 GPUs each on four, 1 each on
#   two; tools/torchrun_nodes.sh, tools/torchrun_x2.sh) and over one node, at comms-64m, then the same
#   calls as raw NCCL graphs (tools/comms_truth.py, sized as the suite sizes them), in this one lease:
#   session 13's raw figures came from another lease than the suite's (session 11).
# Then (16) the split blocks' parallel efficiency, now from back-to-back batches (suite/bench_block.py,
#   PARALLEL_CALLS), beside their asv medians: the two should agree (session 13's call-at-a-time tracks
#   read 0.55 for llama-3-8b TP 4 where session 12's medians gave 0.67).
# Then one lane a GPU. On four:
# GPU 0 (15, 16): Gated DeltaNet at qwen3-next-t4k, ours beside fla (16k-64k were side by side in
#   session 13); ours and fla against causal gqa_8 through SDPA at b4 x 4k; every call re-timed
#   apart; the decode step (qwen3-next-decode-b64) ours beside fla's fused recurrent kernel. Then every
#   block through liger, forward, then forward+backward, at prefill-b4-s4k.
# GPU 1 (16): every block through reference and compiled, forward, at prefill-b4-s4k.
# GPU 2 (16): the same, forward+backward.
# GPU 3 (15, 16, 17): the default tier at HEAD timed whole (decode steps replayed as graphs, mqa
#   nightly); then MoE and paged decode tried, their sides now graph replays, and re-timed apart.
# On two: GPU 0 runs GPU 0's Gated DeltaNet steps, then GPU 1's blocks; GPU 1 runs GPU 3's lane, then
#   GPU 2's blocks; liger's blocks (session 12 timed four) only where time is left.
set -u
root=reports/truth/finish-$(git rev-parse --short HEAD)
mkdir -p "$root"
vb="python3 -m variantbench"
lane() {  # lane NAME DEVICES COMMAND...: the command on those GPUs, its log in $root/NAME.log
  local name=$1 devices=$2
  shift 2
  mkdir -p "/tmp/home-$name"
  (export CUDA_VISIBLE_DEVICES=$devices HOME=/tmp/home-$name; "$@") > "$root/$name.log" 2>&1
  echo "== lane $name (GPUs $devices): exit $? at ${SECONDS}s"
}
linear_lane() {
  local budget=$1 dest=$root/linear show='^verdict|^ +(fla|triton|sdpa) +ok|ERROR'
  mkdir -p "$dest"
  source tools/budgeted.sh
  step try-gdn-4k 360 $vb try gated_deltanet --shape qwen3-next-t4k --json "$dest/try-gdn-4k.json"
  step try-gdn-vs-gqa 360 $vb try gated_deltanet --shape qwen3-next-b4-t4k --against attention/gqa_8@llama-3-8b-s4k \
    --json "$dest/try-gdn-vs-gqa.json"
  # session 13's decode step, never run on a GPU: ours against fla's fused recurrent kernel
  step try-gdn-decode 240 $vb try gated_deltanet --shape qwen3-next-decode-b64 --json "$dest/try-gdn-decode.json"
  show='%|do_bench|graph'
  step truth 300 python3 tools/try_truth.py --fused-only "$dest/try-gdn-4k.json" "$dest/try-gdn-vs-gqa.json" \
    "$dest/try-gdn-decode.json"
}
blocks_lane() {  # blocks_lane BUDGET LIMIT BENCH IMPLEMENTATION...: every block through them, one benchmark
  local budget=$1 limit=$2 bench=$3 dest=$root/blocks-$4 show='MISMATCH|ERROR|asv finished|Traceback' impls=""
  shift 3
  for impl in "$@"; do impls="$impls --implementation $impl"; done
  mkdir -p "$dest"
  source tools/budgeted.sh
  step "${bench%%\\*}" "$limit" $vb run --family block --tier full --shape prefill-b4-s4k $impls --no-precheck --bench "$bench"
}
linear_then_liger() {
  linear_lane "$1"
  blocks_lane "$1" 300 'BlockForward\.time' liger
  blocks_lane "$1" 400 'BlockForwardBackward\.time' liger
}
linear_then_blocks() {
  linear_lane "$1"
  blocks_lane "$1" 900 'BlockForward\.time' reference compiled
  blocks_lane "$1" 300 'BlockForward\.time' liger
}
default_then_blocks() {
  default_lane "$1"
  blocks_lane "$1" 900 'BlockForwardBackward\.time' reference compiled
  blocks_lane "$1" 400 'BlockForwardBackward\.time' liger
}
default_lane() {
  local t0=$SECONDS dest=$root/default budget=$1 show='^verdict|ERROR|%|do_bench|graph'
  mkdir -p "$dest"
  timeout 720 $vb run
  echo "== default tier: exit $? in $((SECONDS - t0))s"
  source tools/budgeted.sh
  # issue 17's MoE decode verdict and paged decode's, now that try times a decode step as graph replays
  step try-decode 240 $vb try softmax_topk --shape deepseek-v3-decode-t16-zipf --shape mixtral-8x7b-decode-t16-zipf \
    --json "$dest/try-moe-decode.json"
  step try-paged 120 $vb try gqa_decode --shape llama-3-8b-paged16-b1-kv128k --json "$dest/try-paged.json"
  step truth 240 python3 tools/try_truth.py --fused-only "$dest/try-moe-decode.json" "$dest/try-paged.json"
}
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ne 4 ] && [ "$gpus" -ne 2 ]; then echo "finish_lanes.sh wants 2 or 4 GPUs, not $gpus"; exit 2; fi
if [ "$gpus" = 4 ]; then
  bash tools/torchrun_nodes.sh "$root/nodes" comms-64m
else
  bash tools/torchrun_x2.sh "$root/nodes" comms-64m
fi
echo "== suite's comms: ${SECONDS}s"
for nodes in 2 1; do
  timeout 120 python3 tools/comms_truth.py --nodes $nodes --sizes 67108864 --ops all_reduce,all_gather,reduce_scatter \
    --calls $([ $nodes = 2 ] && echo 2,5 || echo 10,50) > "$root/nodes/truth-$nodes-node.log" 2>&1
  echo "== raw NCCL over $nodes node(s): exit $?"; cat "$root/nodes/truth-$nodes-node.log"
done
dest=$root/parallel budget=900 show='MISMATCH|ERROR|asv finished|parallel|prefill-b4-s4k  '
mkdir -p "$dest"
source tools/budgeted.sh
step parallel 420 $vb run --family block --tier full --shape prefill-b4-s4k --variant llama-3-8b --variant qwen3-30b-a3b \
  --implementation tensor_parallel --implementation sequence_parallel --no-precheck --bench 'BlockParallel|BlockForward\.time'
if [ "$gpus" = 4 ]; then
  lane linear-liger 0 linear_then_liger 1550 &
  lane blocks-forward 1 blocks_lane 1550 900 'BlockForward\.time' reference compiled &
  lane blocks-fwd-bwd 2 blocks_lane 1550 900 'BlockForwardBackward\.time' reference compiled &
  lane default 3 default_lane 1550 &
else
  lane linear-blocks 0 linear_then_blocks 1420 &
  lane default-blocks 1 default_then_blocks 1420 &
fi
wait
