# Issue 18: the collectives over two torchrun "nodes" of 2 GPUs each on one 4-GPU machine, beside one
# 4-rank run on the same machine (called by tools/x4_lanes.sh; logs in $1, default $OUT/torchrun):
#   bash tools/torchrun_nodes.sh DEST
# The agents rendezvous on localhost (c10d) and serve rank 0 after rank 0 (kernels/comms/serve_ranks.py);
# the driver's "node" runs one worker (GPU 1) beside rank 0 (GPU 0), the other node two (GPUs 2, 3).
# NCCL_HOSTID differs per node, so NCCL takes them for two hosts and joins them through its network
# transport, as between real nodes, rather than NVLink. Multicast stays off (../shared/GPU.md).
dest=${1:-${OUT:-/tmp}/torchrun}
mkdir -p "$dest"
vb="python3 -m variantbench"
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- comms-8k comms-64m
shapes=""
for shape in "$@"; do shapes="$shapes --shape $shape"; done
agent() {  # agent NODE GPUS WORKERS HOSTS_RENDEZVOUS [--gpu-offset 1]: on one machine is_host says which hosts it
  local node=$1 gpus=$2 workers=$3 host=$4
  shift 4
  CUDA_VISIBLE_DEVICES=$gpus NCCL_HOSTID=vb-node-$node setsid python3 -m torch.distributed.run --nnodes 2 \
    --node-rank "$node" --nproc-per-node "$workers" --max-restarts 0 --rdzv-backend c10d \
    --rdzv-endpoint 127.0.0.1:29400 --rdzv-id vb-nodes --rdzv-conf is_host=$host \
    -m kernels.comms.serve_ranks --control 127.0.0.1:29500 "$@" > "$dest/agent-$node.log" 2>&1 &
}
agent 0 0,1 1 true --gpu-offset 1
agent 1 2,3 2 false
trap 'pkill -f "rdzv-id vb-nodes"' EXIT
t0=$SECONDS
export CUDA_VISIBLE_DEVICES=0,1 NCCL_HOSTID=vb-node-0 VARIANTBENCH_RANKS=torchrun://127.0.0.1:29500
timeout 150 $vb check --family comms --tier full > "$dest/two-nodes-check.log" 2>&1
echo "== two nodes x 2: check exit $? in $((SECONDS - t0))s"; tail -n 3 "$dest/two-nodes-check.log"
t0=$SECONDS
timeout 300 $vb run --family comms --tier full $shapes --no-precheck > "$dest/two-nodes-run.log" 2>&1
echo "== two nodes x 2: run exit $? in $((SECONDS - t0))s"
pkill -f "rdzv-id vb-nodes"
t0=$SECONDS
env -u VARIANTBENCH_RANKS -u NCCL_HOSTID CUDA_VISIBLE_DEVICES=0,1,2,3 timeout 240 $vb run --family comms --tier full $shapes --no-precheck \
  > "$dest/single-node-x4.log" 2>&1
echo "== one node, 4 ranks: exit $? in $((SECONDS - t0))s"
grep -hE "busbw|GB/s|all_reduce|all_gather|reduce_scatter|all_to_all" "$dest"/single-node-x4.log "$dest"/two-nodes-run.log | tail -n 30
