# What issues 16 and 17 still lack after session 16, on one nvidia-h200-x2 or one nvidia-h200 (about
# 25 minutes held):
#   git bundle create .vbgit.bundle main score-fma bwd-speed
#   run(kind=..., carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s17_lanes.sh' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# Lane "blocks" (16): three MoE blocks' references as the fused block's speedup (session 16's lease
# ran out before them; a pair an invocation took ~65 s for the dense blocks; DeepSeek-V3's reference
# cannot run at this shape), then every block's
# reference speedup re-timed apart (tools/asv_truth.py), this commit's and f9daf81's; DeepSeek-V3's
# block forward+backward through fused and liger (refused until a0bfdaa), re-timed; then (17) branch
# score-fma (ALiBi in one FMA, softcap's exp2 off the MUFU) gated against main on our forward.
# Lane "backward" (17): bwd-speed's forward+backward kernel by kernel (the profiler), gated against
# main on our forward+backward; DeepSeek-V3's MoE at prefill kernel by kernel; bwd-speed's tile sweep.
# On one GPU: the references, DeepSeek-V3's forward+backward, the re-timings, the backward's profile
# and gate, score-fma's gate, the MoE profile, the tile sweep, each step cut at the job's budget
# (tools/budgeted.sh). The branch gates keep their
# results out of reports/results (main's history): under /tmp, their summaries under reports/gate.
set -u
root=reports/truth/s17-$(git rev-parse --short HEAD)
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, within, results, truth, lane, dsv3_fwd_bwd
show='MISMATCH|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress|x reference| ms |largest|^[a-z]+/'
speedup=bench_block.BlockReferenceSpeedup.track_speedup_over_reference
references() {
  step references-moe 150 $vb run --family block --tier full --shape prefill-b4-s4k --implementation fused \
    --no-precheck --bench BlockReferenceSpeedup --variant qwen3-30b-a3b --variant mixtral-8x7b
  # DeepSeek-V3's reference cannot run here (its latent attention's float32 scores, 32 GiB, over the
  # reference's 8 GiB): no speedup over it at prefill-b4-s4k
  step references-linear 150 $vb run --family block --tier full --shape prefill-b4-s4k --implementation fused \
    --no-precheck --bench BlockReferenceSpeedup --variant qwen3-next
}
truth_references() {
  truth truth-references 240 $speedup
  step truth-references-f9daf81 200 python3 tools/asv_truth.py \
    "$(ls reports/results/*/f9daf818-*.json | head -1)" $speedup
}
profile_backward() {
  worktree bwd-speed || return
  step profile-backward 150 bash -c "cd /tmp/bwd-speed && python3 tools/probe_attention_backward.py --no-sweep gqa_8 softcap_50"
}
gate_backward() {
  local bwd
  bwd=$(branch bwd-speed) || return
  step gate-backward 420 $vb gate "$(git rev-parse HEAD)" "$bwd" --factor 1.05 --family attention --implementation triton \
    --variant gqa_8 --variant softcap_50 --variant alibi --variant document --bench 'AttentionForwardBackward\.time' \
    --results /tmp/gate-bwd --summary reports/gate/bwd-speed-h200.md
}
sweep_backward() {
  worktree bwd-speed || return
  step sweep-backward 200 bash -c "cd /tmp/bwd-speed && python3 tools/probe_attention_backward.py gqa_8"
}
profile_moe_prefill() {  # issue 17's DeepSeek-V3 prefill at 44% of roofline (session 13): where it goes
  step profile-moe-prefill 150 python3 tools/probe_kernels.py moe sigmoid_grouped_topk triton,grouped_mm \
    deepseek-v3-prefill-t4k-zipf
}
gate_scores() {  # score-fma: alibi-fold's one-FMA ALiBi, then softcap's exp2 on the FMA pipe
  local scores
  scores=$(branch score-fma) || { echo "== score-fma: no such branch carried"; return; }
  step gate-scores 420 $vb gate "$(git rev-parse HEAD)" "$scores" --factor 1.05 --family attention --variant alibi \
    --variant softcap_50 --variant gqa_8 --implementation triton --bench 'AttentionForward\.time' \
    --results /tmp/gate-scores --summary reports/gate/score-fma-h200.md
}
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  lane blocks 0 1400 'references; truth_references; dsv3_fwd_bwd; gate_scores' &
  lane backward 1 1400 'profile_backward; gate_backward; profile_moe_prefill; sweep_backward' &
  wait
  cat "$root/blocks.log" "$root/backward.log"
else
  lane one 0 1600 'references; dsv3_fwd_bwd; truth_references; gate_scores; gate_backward; profile_backward; profile_moe_prefill; sweep_backward'
  cat "$root/one.log"
fi
