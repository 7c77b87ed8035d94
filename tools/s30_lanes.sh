# Issue 17 in session 30, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s30_lanes.sh STEPS SECONDS' && await lanes 520
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 290 (never `workdir` again)
# First lease: session 29's two pending patches (reports/pending/README.md) on the GPU for the first time:
# alibi-cols tested, probed beside main and gated both ways; item-trace tested and traced; and the documents'
# forward+backward on main beside pre-q-ring (30a7417), gated and profiled kernel by kernel.
set -u
root=reports/truth/s30-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_gate, bwd_gate, item_trace
first='gpu_tests gluon-tests-alibi-cols alibi-cols -k gluon && { gluon_probe main causal alibi softcap_50;
  gluon_probe alibi-cols causal alibi softcap_50; fwd_gate alibi-cols; bwd_gate alibi-cols; }'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
