# The open GPU items on one 4-GPU machine (nvidia-h200-x4; on two GPUs the blocks come after the first
# two lanes and the 4-rank step is left out), in lanes side by side so that one device session (1800 s)
# holds them all:
#   git bundle create .vbgit.bundle main aa-h200 planted-h200-6pct
#   run(kind="nvidia-h200-x4", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh && source tools/gpu_detached.sh \
#     && workdir && detach lanes 'bash tools/x4_lanes.sh' && await lanes 540     (then `await lanes 560` within 30 s)
# GPU 0, issue 12: the planted ~6% slowdown at factor 1.05 (tools/gate_f105.sh).
# GPU 1, issues 14, 15: the Flex fixes made on the CPU, then HEAD's default tier timed whole (with the
#   decode shapes it now has: its wall time is the figure the issues ask for).
# GPUs 2-3, issue 16: the blocks on two GPUs (tools/block_gpu.sh: checks, timings, tries, truth).
# Then all four, issue 16: the tensor- and sequence-parallel blocks over 4 ranks.
# One GPU per lane (CUDA_VISIBLE_DEVICES), so each records under the machine its GPU count names
# (nvidia-h200, nvidia-h200-x2, nvidia-h200-x4). Each lane has its own HOME: asv keeps its machine
# file there (~/.asv-machine.json, rewritten by every run) and lanes must not race on it. The lanes
# share the host's CPUs and PCIe; the gate's confirming re-runs judge noise on the same machine.
set -u
budget=${BUDGET:-1500}
root=reports/truth/x4-$(git rev-parse --short HEAD)
mkdir -p "$root"
lane() {  # lane NAME GPUS COMMAND...: the command on those GPUs, its log in $root/NAME.log
  local name=$1 gpus=$2
  shift 2
  mkdir -p "/tmp/home-$name"
  (export CUDA_VISIBLE_DEVICES=$gpus HOME=/tmp/home-$name; "$@") > "$root/$name.log" 2>&1
  echo "== lane $name (GPUs $gpus): exit $? at ${SECONDS}s"
}
planted() { bash tools/gate_f105.sh; }
attention() {
  local dest=$root/attention show='^verdict|MISMATCH|ERROR|passed|slower|asv finished|measured |precheck'
  mkdir -p "$dest"
  source tools/budgeted.sh
  step flex-fixes 240 python3 -m variantbench check --family attention --family paged --variant block_topk_16 \
    --variant gqa_decode --implementation flex --tier full --shape llama-3-8b-s4k \
    --shape llama-3-8b-paged16-b64-kv8k --shape llama-3-8b-paged16-b64-mixed8k --shape llama-3-8b-paged16-b1-kv128k
  step default-tier 1000 python3 -m variantbench run
}
gpus=$(nvidia-smi -L | wc -l)
lane planted 0 planted &
lane attention 1 attention &
if [ "$gpus" -ge 4 ]; then
  lane block-x2 2,3 env DEST="$root/block-x2" BUDGET=$((budget - 400)) bash tools/block_gpu.sh &
  wait
else  # two GPUs: the blocks after the other lanes, on both
  wait
  lane block-x2 0,1 env DEST="$root/block-x2" BUDGET=$((budget - SECONDS)) bash tools/block_gpu.sh
  exit
fi
dest=$root/block-x4
show='^verdict|MISMATCH|ERROR|passed|parallel|asv finished'
mkdir -p "$dest"
source tools/budgeted.sh
step check-x4 240 python3 -m variantbench check --family block --tier full \
  --implementation tensor_parallel --implementation sequence_parallel
step run-x4 400 python3 -m variantbench run --family block --tier full --shape prefill-b4-s4k \
  --shape decode-b64-kv4k --implementation tensor_parallel --implementation sequence_parallel --no-precheck
