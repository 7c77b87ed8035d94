# Issue 17 in session 20, on one nvidia-h200:
#   git bundle create .vbgit.bundle main bwd-tma
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s20_lanes.sh STEPS SECONDS' && await lanes 540
# First lease: 'mufu; bwd_probe bwd-tma; bwd_check bwd-tma': the special-function unit's rate per form,
# main's forward+backward profiled beside the branch's (the backward's loop tiles through the copy
# engine) with the branch's tiles swept, and the branch's gradients checked on the GPU for every
# attention variant. Second: 'bwd_probe bwd-kv-regs; bwd_gate bwd-tma' (dQ's winner committed on
# bwd-tma; bwd-kv-regs, on it, holds dK/dV's own K and V in registers). Third: 'bwd_variant main softcap_50
# --no-sweep; bwd_variant bwd-tma softcap_50 --no-sweep; bwd_variant bwd-flat gqa_8; bwd_variant bwd-flat
# softcap_50' (which kernel softcap lost 2.8% in, and bwd-flat's loops swept). Fourth: 'bwd_gate bwd-flat;
# bwd_variant bwd-flat gqa_8 --no-sweep; bwd_variant bwd-flat softcap_50 --no-sweep; bwd_check bwd-flat'.
# Fifth, bwd-flat merged: 'fwd_bwd_history' (main's own results for the history, re-timed apart). Sixth:
# 'gpu_numerics; fwd_history' (the backward at head dim 128 on the GPU; the forwards side by side in this
# session, for issue 17's forward goals). Seventh: 'gpu_numerics' (float32 refused, not crashed).
set -u
root=reports/truth/s20-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, within, results, truth, lane, attention_gate, moe_branch, moe_layers, default_tier
mufu() {
  step mufu 90 python3 tools/probe_mufu.py
}
bwd_probe() {  # bwd_probe BRANCH: main's gqa_8 forward+backward profiled at its tiles, the branch's swept
  step bwd-main 150 python3 tools/probe_attention_backward.py gqa_8 --no-sweep
  worktree "$1" && step "bwd-$1" 420 $(within "$1") python3 tools/probe_attention_backward.py gqa_8
}
bwd_variant() {  # bwd_variant BRANCH VARIANT [--no-sweep]: one variant's forward+backward probed on a branch
  worktree "$1" && step "bwd-$1-$2" 300 $(within "$1") python3 tools/probe_attention_backward.py "$2" ${3:-}
}
bwd_check() {  # bwd_check BRANCH: every attention variant's forward and gradients through ours, on the branch
  worktree "$1" && step "check-$1" 300 $(within "$1") python3 -m variantbench check --family attention \
    --implementation triton --tier default
}
fwd_bwd_history() {  # our attention's forward+backward beside SDPA's and Flex's at llama-3-8b-s4k, on main
  step fwd-bwd 360 $vb run --family attention --shape llama-3-8b-s4k --variant gqa_8 --variant softcap_50 \
    --variant alibi --bench 'AttentionForwardBackward\.time'
  truth truth-fwd-bwd 200 bench_attention.AttentionForwardBackward.time_forward_backward --most 6
}
gpu_numerics() {
  step gpu-tests 200 env TRITON_INTERPRET=0 VARIANTBENCH_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider \
    tests/test_gpu_numerics.py
}
lane one 0 "${2:-900}" "${1:-mufu; bwd_probe bwd-tma; bwd_check bwd-tma}"
cat "$root/one.log"
