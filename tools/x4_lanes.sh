# The open GPU items on one 4-GPU machine (nvidia-h200-x4), in lanes side by side so that one device
# session (1800 s) holds them all; on two GPUs the block lane comes after the first two and the
# 4-rank steps are left out:
#   git bundle create .vbgit.bundle main softcap-hw-tanh
#   run(kind="nvidia-h200-x4", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh && source tools/gpu_detached.sh \
#     && workdir && detach lanes 'bash tools/x4_lanes.sh' && await lanes 540     (then `await lanes 560` within 30 s)
# GPU 0, issues 14, 15: HEAD's default tier alone on its GPU, timed whole: the figure those issues ask
#   for (cad5169's ran past 1000 s; 7f649b7 moved Flex attention to the nightly tier); on two GPUs
#   then issue 17's gate of branch softcap-hw-tanh (our softcap through the hardware tanh) against main.
# GPU 1, issues 14, 15, 17: the sparse variants at 64k and MLA decode over 32k, re-timed apart; our MLA
#   decode against the roofline over a sweep of tiles (tools/probe_mla.py) and our Gated DeltaNet's
#   kernels beside fla's (tools/probe_gdn.py); the MoE layers checked and `try` at decode, re-timed;
#   on four GPUs the softcap gate after them.
# GPUs 2-3 (on two GPUs: 0-1 after the lanes above), issues 16, 18: the split blocks at llama-3-8b and
#   qwen3-30b-a3b (tensor, sequence, sequence with its collectives overlapped), the fused blocks'
#   forward+backward, `try` of Mixtral's block re-timed apart, on two GPUs rank 1 through torchrun
#   (tools/torchrun_x2.sh), then the rest of the split blocks' check.
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
default_tier() {  # then, on two GPUs, issue 17's softcap gate on the same GPU once the tier is timed
  local t0=$SECONDS
  timeout 780 $vb run
  echo "== default tier: exit $? in $((SECONDS - t0))s"
  [ "$gpus" -ge 4 ] || softcap 880
}
softcap() {  # softcap BUDGET: branch softcap-hw-tanh (our softcap through the hardware tanh, never yet
  # run on a GPU) gated against main: softcap_50 forward and forward+backward must read faster, checked
  # (every measured case is checked in its setup, gradients too), gqa_8 the same; then its try, re-timed
  local budget=$1 dest=$root/softcap show='^verdict|^try:|MISMATCH|ERROR|passed|median| ms'
  mkdir -p "$dest"
  source tools/budgeted.sh
  local branch  # gpu_setup.sh's clone of the bundle holds it as origin/softcap-hw-tanh
  branch=$(git rev-parse --verify -q origin/softcap-hw-tanh || git rev-parse softcap-hw-tanh)
  step gate-softcap 300 $vb gate "$(git rev-parse HEAD)" "$branch" --factor 1.05 --machine nvidia-h200 \
    --family attention --variant softcap_50 \
    --variant gqa_8 --implementation triton --shape llama-3-8b-s4k --tier full --results "$dest/gate-results" \
    --bench 'AttentionForward\.time_forward|AttentionForwardBackward\.time_forward_backward' \
    --summary reports/gate/softcap-hw-tanh-h200.md
  step try-softcap 150 $vb try softcap_50 --shape llama-3-8b-s4k --json "$dest/try-softcap.json"
  step truth 90 python3 tools/try_truth.py "$dest/try-softcap.json"
}
attention_and_moe() {  # issue 14's missing figures first, the probes, then the MoE decode path
  local budget=880 dest=$root/moe show='^verdict|^try:|MISMATCH|ERROR|passed|replays|synchronis|median| ms|GB/s|peak'
  mkdir -p "$dest"
  source tools/budgeted.sh
  # the sparse variants at 64k against dense causal gqa_8, MLA decode over a 32k latent cache
  step try-sparse-64k 200 $vb try block_topk_16 --shape llama-3-8b-s64k --json "$dest/try-block-topk-64k.json"
  step try-dsa-64k 200 $vb try dsa_topk_2048 --shape llama-3-8b-s64k --json "$dest/try-dsa-64k.json"
  step try-mla-32k 150 $vb try mla --shape deepseek-v3-mla-decode-b64-kv32k --json "$dest/try-mla-32k.json"
  step truth-attention 200 python3 tools/try_truth.py "$dest"/try-block-topk-64k.json "$dest"/try-dsa-64k.json \
    "$dest"/try-mla-32k.json
  step probe-mla 150 python3 tools/probe_mla.py  # issue 14: our MLA decode against the roofline, tiles swept
  step probe-gdn 90 python3 tools/probe_gdn.py qwen3-next-t16k  # issue 15: which of our GDN kernels holds the gap
  step check 150 $vb check --family moe --tier full
  step try-decode 150 $vb try softmax_topk --shape mixtral-8x7b-decode-t16-zipf --shape deepseek-v3-decode-t16-zipf \
    --json "$dest/try-moe-decode.json"
  step truth 90 python3 tools/try_truth.py "$dest/try-moe-decode.json"
  [ "$gpus" -ge 4 ] || return 0
  softcap 1500
}
blocks() {  # on two GPUs (after the lanes above): the split blocks' figures, overlapped split included,
  # fused forward+backward, Mixtral's try re-timed apart, ranks through torchrun, the split check's rest
  local budget=${1:-850} dest=$root/block show='^verdict|^try:|MISMATCH|ERROR|passed|median|asv finished|torchrun|launcher'
  mkdir -p "$dest"
  source tools/budgeted.sh
  step run-x2 240 $vb run --family block --tier full --shape prefill-b4-s4k --variant llama-3-8b \
    --variant qwen3-30b-a3b --implementation fused --implementation tensor_parallel --implementation sequence_parallel \
    --implementation sequence_parallel_overlapped --no-precheck \
    --bench 'BlockForward\.|BlockForwardBackward\.time|BlockParallel'
  step try-mixtral 120 $vb try mixtral-8x7b --shape prefill-b4-s4k --json "$dest/try-mixtral.json"
  step truth 60 python3 tools/try_truth.py "$dest/try-mixtral.json"
  [ "$gpus" -ge 4 ] || step torchrun-x2 200 bash tools/torchrun_x2.sh "$dest/torchrun"
  step check-split 400 $vb check --family block --tier full --implementation tensor_parallel \
    --implementation sequence_parallel --implementation sequence_parallel_overlapped
}
gpus=$(nvidia-smi -L | wc -l)
lane default-tier 0 default_tier &
lane attention-moe 1 attention_and_moe &
if [ "$gpus" -ge 4 ]; then
  lane block 2,3 blocks &
  wait
else
  wait
  lane block 0,1 blocks "$((SECONDS + 460))"
  exit
fi
dest=$root/x4
show='^verdict|MISMATCH|ERROR|passed|parallel|asv finished|busbw|nodes'
mkdir -p "$dest"
source tools/budgeted.sh
step run-x4 240 $vb run --family block --tier full --shape prefill-b4-s4k --variant llama-3-8b \
  --variant qwen3-30b-a3b --implementation fused --implementation tensor_parallel --implementation sequence_parallel \
  --implementation sequence_parallel_overlapped --no-precheck --bench 'BlockForward\.|BlockParallel'
step torchrun-nodes 420 bash tools/torchrun_nodes.sh "$dest"
