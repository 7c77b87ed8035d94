# Issue 17 in session 22, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name: shared-overlap and
#   bwd-overlap for the first, bwd-atomic, bwd-overlap-lpt, lpt-*, no-join and no-fork for later ones)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s22_lanes.sh STEPS SECONDS' && await lanes 540
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: 'bwd_pair bwd-overlap gqa_8; numerics main; numerics shared-overlap; moe_branch shared-overlap':
# main's forward+backward and the branch's (dQ's kernel beside dK/dV's on a second stream), the GPU tests on
# main and on shared-overlap (whose new test captures the MoE layer in a CUDA graph), then shared-overlap
# gated at four MoE shapes and profiled at DeepSeek-V3 prefill. Second: 'numerics bwd-atomic; step bwd-main-gqa_8
# ...; bwd_sweep bwd-atomic gqa_8; bwd_sweep bwd-atomic softcap_50' (one backward kernel, dQ summed in float32).
# Third: 'step bwd-main-gqa_8 ...; gate_faster gqa_8 bwd-overlap bwd-overlap-lpt' (the faster overlap gated).
# Fourth, bwd-overlap merged: 'numerics main; step bwd-main-gqa_8 ...; gate_faster gqa_8 lpt-overlap lpt-serial
# lpt-dqfirst; fwd_bwd_gqa' (dK/dV's longest programs first, with dQ beside it, after it, or launched first).
# Fifth: 'numerics main; broken no-join; broken no-fork; fwd_side_by_side' (the review's stream tests, which
# must fail on the two breaking branches, and the forwards of this session side by side).
set -u
root=reports/truth/s22-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... attention_gate, bwd_gate, fwd_history, gpu_tests, moe_branch, ...
bwd_pair() {  # bwd_pair BRANCH VARIANT: main's forward+backward then the branch's, each profiled kernel by kernel
  step "bwd-main-$2" 150 python3 tools/probe_attention_backward.py "$2" --no-sweep
  bwd_probe_branch "$1" "$2"
}
bwd_sweep() {  # bwd_sweep BRANCH VARIANT: the branch's forward+backward over its backward tiles
  worktree "$1" && step "bwd-sweep-$1-$2" 420 $(within "$1") python3 tools/probe_attention_backward.py "$2"
}
ours_ms() {  # ours_ms LOG: the default tiles' forward+backward median in a probe's log
  awk '/ours, default/ {for (i = 1; i <= NF; i++) if ($(i + 1) == "ms") {print $i; exit}}' "$1"
}
gate_faster() {  # gate_faster VARIANT BRANCH...: each branch probed (bwd_pair's second half), the fastest gated
  local best="" best_ms=999 ms
  for b in "${@:2}"; do
    bwd_probe_branch "$b" "$1"
    ms=$(ours_ms "$dest/bwd-$b-$1.log")
    echo "== $b: ${ms:-none} ms"
    if [ -n "$ms" ] && awk "BEGIN {exit !($ms < $best_ms)}"; then best=$b best_ms=$ms; fi
  done
  if [ -n "$best" ]; then echo "== gating $best"; bwd_gate "$best"; else echo "== no branch timed, nothing gated"; fi
}
broken() {  # broken BRANCH: the backward's stream tests on a branch that breaks the fork or the join (must fail)
  gpu_tests "broken-$1" "$1" -k "orders_its_two_streams or cuda_graph"
}
fwd_side_by_side() {  # main's forward beside SDPA's (cuDNN) at llama-3-8b-s4k (asv), re-timed apart
  fwd_history 200 100
}
numerics() {  # numerics BRANCH: the GPU tests (float64 references at head dim 128, CUDA graphs) on a checkout
  gpu_tests "gpu-tests-$1" "$1"
}
lane one 0 "${2:-900}" "${1:-bwd_pair bwd-overlap gqa_8}"
cat "$root/one.log"
