# Issue 17 in session 23, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s23_lanes.sh STEPS SECONDS' && await lanes 540
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: 'numerics main; gluon_tests gluon-forward; gluon_probe gluon-forward': the GPU tests on main
# (session 22's last two edits never ran there), then the Gluon forward's tests and its probe beside our
# Triton forward and cuDNN. Second: 'numerics gluon-dispatch; gluon_probe gluon-dispatch; fwd_gate gluon-dispatch'
# (the Gluon forward chosen per case for every variant it runs: the GPU tests, the probe, the forward gated).
# Third, gluon-dispatch merged (pre-gluon: main before it): 'fwd_history 200 100; fwd_bwd_gqa; bwd_probe gqa_8;
# since_gate pre-gluon': main's forwards and forward+backward beside SDPA's (asv, re-timed apart), the
# forward+backward beside Flex's kernel by kernel, and main gated against the commit before the merge.
# Fourth: 'gpu_tests softcap-tests softcap-fma -k "gluon and softcap"; gluon_probe softcap-fma causal softcap_50;
# fwd_gate softcap-fma' (softcap's exp2 on the FMA pipe: right, then against our causal, then gated).
# Fifth: 'numerics gluon-strided; gluon_probe gluon-strided causal sliding_window_1024 softcap_50' (the forward's
# 4-D descriptors and windows: the GPU tests, then the probe).
set -u
root=reports/truth/s23-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... attention_gate, bwd_gate, fwd_history, gpu_tests, moe_branch, ...
gluon_tests() {  # gluon_tests BRANCH: the Gluon forward's GPU tests alone
  gpu_tests "gluon-tests-$1" "$1" -k gluon
}
bwd_probe() {  # bwd_probe VARIANT: main's forward+backward kernel by kernel, beside SDPA's and Flex's
  step "bwd-main-$1" 150 python3 tools/probe_attention_backward.py "$1" --no-sweep
}
since_gate() {  # since_gate BRANCH: main gated against BRANCH (an earlier main) on our forward+backward
  local base
  base=$(branch "$1") || { echo "== $1: no such branch carried"; return; }
  step "gate-since-$1" 420 $vb gate "$base" "$(git rev-parse HEAD)" --factor 1.05 --family attention \
    --implementation triton --variant gqa_8 --variant softcap_50 --variant alibi --variant document \
    --shape llama-3-8b-s4k --bench 'AttentionForwardBackward\.time' --results "/tmp/gate-since-$1" \
    --summary "reports/gate/since-$1-fwd-bwd-h200.md"
  tar czf "$root/gate-since-$1.tgz" -C /tmp "gate-since-$1"
}
lane one 0 "${2:-900}" "${1:-numerics main}"
cat "$root/one.log"
