# Issue 18 on two GPUs (no 4-GPU kind lent): rank 1 served by a torchrun agent (c10d rendezvous, the
# elastic agent, kernels/comms/serve_ranks.py) beside rank 0, the collectives checked and timed through
# it, then the same collectives from our own launcher (one node, NVLink) for comparison:
#   bash tools/torchrun_x2.sh DEST [SHAPE...]   (default comms-8k comms-64m)
# The worker and rank 0 get different NCCL_HOSTIDs, so NCCL takes them for two hosts and joins them
# through its network transport (sockets here) as between real nodes. Both ranks are on one node as
# far as the suite knows (the agent serves the driver's node, --gpu-offset 1), so the torchrun figures
# go to a side folder under their own machine name and never into nvidia-h200-x2's history.
dest=${1:-${OUT:-/tmp}/torchrun}
mkdir -p "$dest"
vb="python3 -m variantbench"
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- comms-8k comms-64m
shapes=""
for shape in "$@"; do shapes="$shapes --shape $shape"; done
CUDA_VISIBLE_DEVICES=0,1 NCCL_HOSTID=vb-node-1 setsid python3 -m torch.distributed.run --nnodes 1 \
  --nproc-per-node 1 --max-restarts 0 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:29400 --rdzv-id vb-x2 \
  -m kernels.comms.serve_ranks --control 127.0.0.1:29500 --gpu-offset 1 > "$dest/agent.log" 2>&1 &
trap 'pkill -f "rdzv-id vb-x2"' EXIT
export CUDA_VISIBLE_DEVICES=0,1
t0=$SECONDS
NCCL_HOSTID=vb-node-0 VARIANTBENCH_RANKS=torchrun://127.0.0.1:29500 timeout 100 $vb check --family comms --tier full \
  > "$dest/torchrun-check.log" 2>&1
echo "== torchrun, 2 ranks over NCCL's network transport: check exit $? in $((SECONDS - t0))s"; tail -n 3 "$dest/torchrun-check.log"
t0=$SECONDS
NCCL_HOSTID=vb-node-0 VARIANTBENCH_RANKS=torchrun://127.0.0.1:29500 timeout 150 $vb run --family comms --tier full $shapes \
  --no-precheck --machine nvidia-h200-x2-torchrun-nethost --results "$dest/results" > "$dest/torchrun-run.log" 2>&1
echo "== torchrun, 2 ranks: run exit $? in $((SECONDS - t0))s"
pkill -f "rdzv-id vb-x2"
t0=$SECONDS
timeout 150 $vb run --family comms --tier full $shapes --no-precheck --results "$dest/results-local" \
  > "$dest/local-x2.log" 2>&1
echo "== our launcher, 2 ranks on NVLink: run exit $? in $((SECONDS - t0))s"
grep -hE "busbw|GB/s" "$dest"/torchrun-run.log "$dest"/local-x2.log | tail -n 30
