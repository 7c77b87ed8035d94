# Issue 17 in session 24, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s24_lanes.sh STEPS SECONDS' && await lanes 540
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: 'numerics main; bwd_round gluon-backward': main's GPU tests (session 23's last mends never ran
# there), then the pending Gluon dK/dV: its gradients against float64, and only where they are right, its
# forward+backward kernel by kernel beside SDPA and Flex and its gate against main.
# Second: 'gpu_tests exp2-tests exp2-split -k "gluon and softcap"; exp2_probe exp2-split; fwd_bwd_gqa; ratios':
# softcap's exp2 split between the MUFU and FMA pipes (right, then its share swept beside our causal), then main
# (the Gluon dK/dV merged): forward+backward beside SDPA's, and every interval variant's cost per useful FLOP
# against the baseline (issue 17's first goal).
# Third: 'bwd_round gluon-dq' (dQ in Gluon beside the Gluon dK/dV). Fourth, its softcap mended:
# 'bwd_round gluon-dq; bwd_probe_branch gluon-dq softcap_50'. Fifth: 'fwd_bwd_gqa' (main after both merges);
# sixth: 'gpu_tests gluon-tests-main main -k gluon' (the review's mends).
set -u
root=reports/truth/s24-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... attention_gate, bwd_gate, fwd_history, gpu_tests, moe_branch, ...
exp2_probe() {  # exp2_probe BRANCH: the Gluon forward with 0 to 3 of every 8 of softcap's exp2 on the FMA pipe
  worktree "$1" && step "exp2-probe-$1" 150 $(within "$1") python3 tools/probe_gluon_forward.py causal softcap_50 \
    alibi --exp2-on-fma=0,1,2,3
}
lane one 0 "${2:-900}" "${1:-numerics main}"
cat "$root/one.log"
