# Issue 17 in session 29, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s29_lanes.sh STEPS SECONDS' && await lanes 560
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: session 28's two pending patches (reports/pending/README.md) on the GPU for the first time, together
# as q-doc (q-ring, then doc-early rebased on it: one conflict, the document rows' last store), tested; where
# right, the cost per item on main and on q-doc (tools/probe_item_cost.py), and the five probed forwards on
# main, q-doc and q-ring alone; where wrong, each patch's own round.
set -u
root=reports/truth/s29-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_round, fwd_gate, ratios
first='if gpu_tests gluon-tests-q-doc q-doc -k gluon; then item_cost; item_cost q-doc; gluon_probe main $probed;
  gluon_probe q-doc $probed; gluon_probe q-ring $probed; else fwd_round q-ring; fwd_round doc-early; fi'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
