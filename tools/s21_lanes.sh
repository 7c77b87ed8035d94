# Issue 17 in session 21, on one nvidia-h200:
#   git bundle create .vbgit.bundle main expert-mix ratio-warmup
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s21_lanes.sh STEPS SECONDS' && await lanes 540
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again:
#   it deletes and re-copies the folder the lane runs in; the third lease lost its logs so)
# First lease: 'schedules expert-mix; ratio_warmup': the expert GEMMs under both schedules (index order,
# hot experts with cold ones) at DeepSeek-V3 prefill and decode, do_bench in alternating rounds; the
# budget ratio under main's block plan and the pending warm-up plan, against do_bench. Second:
# 'moe_branch gate-up-tma; expert_sweep gate-up-tma mixtral-8x7b-decode-t16-zipf' (gate_up through the
# copy engine, down through pointers: gated at four shapes, and which kernel moves at Mixtral decode).
# Third, gate-up-tma merged: 'moe_layers; default_tier' (main's MoE layers beside the baseline, for issue
# 17's DeepSeek-V3 prefill share of roofline, and the default tier's wall time under session 19's
# warm-up, each re-timed apart). Fourth: 'fwd_gate fwd-lazy; fwd_probe fwd-lazy' (the forward's lazy
# rescale gated, then both forwards in one process by do_bench).
set -u
root=reports/truth/s21-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|round|mean|do_bench|rows over'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, within, results, truth, lane, attention_gate, moe_branch, moe_layers, default_tier
schedules() {  # schedules BRANCH: the expert GEMMs' two schedules on the branch, DeepSeek-V3 prefill and decode
  worktree "$1" || return
  step "schedules-prefill-$1" 200 $(within "$1") python3 tools/sweep_expert_gemm.py deepseek-v3-prefill-t4k-zipf --schedules
  step "schedules-decode-$1" 120 $(within "$1") python3 tools/sweep_expert_gemm.py deepseek-v3-decode-t16-zipf --schedules
}
ratio_warmup() {  # the budget ratio's two block plans from idle against do_bench, on the ratio-warmup branch
  worktree ratio-warmup || return
  step ratio-warmup 300 $(within ratio-warmup) python3 tools/probe_ratio_warmup.py gqa_8:triton alibi:triton
}
expert_sweep() {  # expert_sweep BRANCH SHAPE: the expert GEMMs' tilings at one MoE shape's load, main then the branch
  step "sweep-main-$2" 120 python3 tools/sweep_expert_gemm.py "$2"
  worktree "$1" && step "sweep-$1-$2" 120 $(within "$1") python3 tools/sweep_expert_gemm.py "$2"
}
fwd_gate() {  # fwd_gate BRANCH: gated against main on our attention's forward at llama-3-8b-s4k
  attention_gate "$1" 270 'AttentionForward\.time'
}
fwd_probe() {  # fwd_probe BRANCH: main's forward and the branch's in one process (do_bench), beside SDPA and Flex
  git show HEAD:kernels/attention/triton_flash.py > /tmp/before.py
  worktree "$1" && step "probe-$1" 150 $(within "$1") python3 tools/probe_attention_kernel.py /tmp/before.py \
    kernels.attention.triton_flash
}
lane one 0 "${2:-900}" "${1:-schedules expert-mix; ratio_warmup}"
cat "$root/one.log"
