# What issues 15, 16 and 17 still lack after session 15, on one nvidia-h200-x2 or one nvidia-h200
# (about 25 minutes held):
#   git bundle create .vbgit.bundle main alibi-fold bwd-speed
#   run(kind=..., carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s16_lanes.sh' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# GPU 0 (15, 16, 17):
#   - the default tier whole at HEAD, alone on its GPU: 75ceccd's took 643 s; bidirectional attention,
#     DeepSeek-V3's router at Mixtral's shapes and paged Flex went nightly since (about 75 s of it);
#   - gate 6fa6a6d (MoE permute / unpermute over column slices) against its parent at both decode
#     shapes (probed at 0.863x on DeepSeek-V3, session 15; never gated);
#   - branch bwd-speed gated against main on our forward+backward, then
#     tools/probe_attention_backward.py over the backward's tiles (the next change's choice).
# GPU 1 (16, 17):
#   - every block's forward+backward through compiled and liger at prefill-b4-s4k (asv medians; the
#     forwards were timed in session 15);
#   - a few of those medians re-timed apart (tools/asv_truth.py), as the default tier's are on GPU 0;
#   - every block's decode step through fused, as graph replays (session 12's were eager), re-timed;
#   - every block's reference, as the fused block's speedup over it (metrics time the reference apart);
#   - branch alibi-fold gated against main at 1.05.
# On one GPU: the default tier, liger's blocks forward+backward, the MoE gate, the probe, compiled's
# blocks, the re-timings, the decode steps, the references, then the two branch gates, each step cut
# at the job's budget (tools/budgeted.sh). The branch gates keep their results out of reports/results
# (main's history): under /tmp, with their summaries under reports/gate.
set -u
root=reports/truth/s16-$(git rev-parse --short HEAD)
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, results, truth, lane
show='MISMATCH|ERROR|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress|precheck:'
default_tier() {
  step default 660 $vb run
  truth truth-attention 120 bench_attention.AttentionForward.time_forward --most 6
  truth truth-moe 90 bench_moe.MoEForward.time_forward --shape mixtral-8x7b-decode-t16-zipf
}
gate_moe() {
  step gate-moe 300 $vb gate 0ef7ab2 6fa6a6d --factor 1.05 --family moe --implementation triton --tier full \
    --shape deepseek-v3-decode-t16-zipf --shape mixtral-8x7b-decode-t16-zipf --summary reports/gate/moe-columns-h200.md
}
probe_backward() {
  local bwd
  bwd=$(branch bwd-speed) || { echo "== bwd-speed: no such branch carried"; return; }
  rm -rf /tmp/bwd && git worktree add -f /tmp/bwd "$bwd" > /dev/null 2>&1
  step probe-backward 240 bash -c "cd /tmp/bwd && python3 tools/probe_attention_backward.py gqa_8 softcap_50"
}
gate_backward() {
  local bwd
  bwd=$(branch bwd-speed) || return
  step gate-backward 420 $vb gate "$(git rev-parse main)" "$bwd" --factor 1.05 --family attention --implementation triton \
    --variant gqa_8 --variant softcap_50 --variant alibi --variant document --bench 'AttentionForwardBackward\.time' \
    --results /tmp/gate-bwd --summary reports/gate/bwd-speed-h200.md
}
block="$vb run --family block --tier full --shape prefill-b4-s4k --no-precheck"
# one run an implementation: a run publishes each timed benchmark's whole grid once done, so a cut
# step loses its own grid only
liger_fwd_bwd() { step liger-fwd-bwd 420 $block --implementation liger --bench 'BlockForwardBackward\.time'; }
compiled_fwd_bwd() { step compiled-fwd-bwd 540 $block --implementation compiled --bench 'BlockForwardBackward\.time'; }
truth_fwd_bwd() { truth truth-fwd-bwd 240 bench_block.BlockForwardBackward.time_forward_backward --most 4; }
block_decode() {  # session 12 timed these eagerly, before decode steps were replayed as graphs
  step block-decode 300 $vb run --family block --tier full --shape decode-b64-kv4k --implementation fused \
    --no-precheck --bench 'BlockForward\.time'
  truth truth-decode 240 bench_block.BlockForward.time_forward --shape decode-b64-kv4k
}
block_reference() { step block-reference 420 $block --implementation fused --bench 'BlockReferenceSpeedup'; }
gate_alibi() {
  local alibi
  alibi=$(branch alibi-fold) || { echo "== alibi-fold: no such branch carried"; return; }
  step gate-alibi 400 $vb gate "$(git rev-parse main)" "$alibi" --factor 1.05 --family attention --variant alibi \
    --variant gqa_8 --implementation triton --results /tmp/gate-alibi --summary reports/gate/alibi-fold-h200.md
}
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  lane tier 0 1450 'default_tier; gate_moe; gate_backward; probe_backward' &
  lane blocks 1 1450 'liger_fwd_bwd; compiled_fwd_bwd; truth_fwd_bwd; block_decode; block_reference; gate_alibi' &
  wait
  cat "$root/tier.log" "$root/blocks.log"
else  # 15's and 16's first runs, 17's MoE gate and tile probe, then the rest of 16, then the branch gates
  lane one 0 1500 'default_tier; liger_fwd_bwd; gate_moe; probe_backward; compiled_fwd_bwd; truth_fwd_bwd; block_decode; block_reference; gate_backward; gate_alibi'
  cat "$root/one.log"
fi
