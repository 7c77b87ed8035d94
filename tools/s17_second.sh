# Session 17's second lease, on one nvidia-h200 (about 13 minutes held; the first: tools/s17_lanes.sh):
#   git bundle create .vbgit.bundle main router-dot
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s17_second.sh' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# Issue 16: DeepSeek-V3's block forward+backward through fused and liger, now that the check leaves out
# rows routed near a tie (3560b93), re-timed apart, and its gradients probed (every gradient, the rows
# each side routed otherwise). Issue 17: branch router-dot (the router's logits on the tensor cores)
# gated against main on our MoE layer, DeepSeek-V3 prefill profiled on it; main's attention forward
# (ALiBi's one FMA merged) and forward+backward (bwd-speed merged) beside SDPA and Flex, re-timed apart.
set -u
root=reports/truth/s17b-$(git rev-parse --short HEAD)
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, within, results, truth, lane, dsv3_fwd_bwd
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |largest|^[a-z]+/|BAD|routed|decided'
gate_router() {
  local head
  head=$(branch router-dot) || { echo "== router-dot: no such branch carried"; return; }
  step gate-router 300 $vb gate "$(git rev-parse HEAD)" "$head" --factor 1.05 --family moe --implementation triton \
    --tier full --shape deepseek-v3-prefill-t4k-zipf --shape deepseek-v3-decode-t16-zipf \
    --shape mixtral-8x7b-prefill-t8k-zipf --shape mixtral-8x7b-decode-t16-zipf --bench 'MoEForward\.time' \
    --results /tmp/gate-router --summary reports/gate/router-dot-h200.md
}
attention() {
  step attention 200 $vb run --family attention --tier default --shape llama-3-8b-s4k --variant gqa_8 --variant alibi \
    --variant softcap_50 --implementation triton --implementation sdpa --implementation flex --no-precheck \
    --bench 'AttentionForward\.time|AttentionForwardBackward\.time'
  truth truth-attention 150 bench_attention.AttentionForward.time_forward
}
profile_router() {
  worktree router-dot || return
  step profile-router 100 bash -c "cd /tmp/router-dot && python3 tools/probe_kernels.py moe sigmoid_grouped_topk triton deepseek-v3-prefill-t4k-zipf"
}
probe_gradients() {
  step probe-dsv3-gradients 150 python3 tools/probe_block_gradients.py deepseek-v3 fused prefill-b4-s4k
}
lane one 0 780 'dsv3_fwd_bwd; gate_router; attention; profile_router; probe_gradients'
cat "$root/one.log"
