# Issue 17 after session 18, on one nvidia-h200:
#   git bundle create .vbgit.bundle main expert-tma
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s19_lanes.sh STEPS SECONDS' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# First lease: 'expert_sweep expert-tma; gpu_numerics; moe_layers': the TMA expert GEMMs' tilings swept
# (they were chosen for pointer loads), main's swept beside them in the same lease, the GPU-only numerics
# (the dense SDPA cuDNN test after a contiguous-gradient backward is new), and main's MoE layers at both
# decodes and DeepSeek-V3 prefill beside the family's baseline. Second: 'gpu_numerics; tma_sweep;
# moe_branch expert-tma' (the numerics again after attend_through, the branch's deeper pipelines, the
# gate with the branch's tilings from the first sweep), then default_tier if the budget allows. Third:
# 'prefill_twice; moe_branch expert-tma' (the new warm-up). Fourth: 'softcap_branch'.
set -u
root=reports/truth/s19-$(git rev-parse --short HEAD)
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, within, results, truth, lane, moe_branch, moe_layers, default_tier
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |largest|^[a-z]+/|BAD|routed|WRONG|failed|^  \(|passed'
expert_sweep() {  # expert_sweep BRANCH: the branch's expert GEMM tilings at DeepSeek-V3 prefill and decode, main's at prefill
  worktree "$1" || return
  for shape in deepseek-v3-prefill-t4k-zipf deepseek-v3-decode-t16-zipf; do
    step "sweep-$1-${shape%%-zipf}" 200 $(within "$1") python3 tools/sweep_expert_gemm.py "$shape"
  done
  step sweep-main-deepseek-v3-prefill 200 python3 tools/sweep_expert_gemm.py deepseek-v3-prefill-t4k-zipf
  step profile-main 100 python3 tools/probe_kernels.py moe sigmoid_grouped_topk triton deepseek-v3-prefill-t4k-zipf
}
tma_sweep() {  # the branch's tilings again at DeepSeek-V3 prefill, with the deeper pipelines the sweep gained
  worktree expert-tma && step sweep-expert-tma-deeper 200 $(within expert-tma) python3 tools/sweep_expert_gemm.py
}
prefill_twice() {  # MoE prefill through ours, two runs of one commit: each run's sample spread, run against run
  # (the 1.2 s warm-up and 100 ms samples against session 19's gate: se 5%, samples 10.1 -> 12.7 ms)
  local run
  for run in a b; do
    step "prefill-$run" 200 $vb run --family moe --tier full --implementation triton --shape deepseek-v3-prefill-t4k-zipf \
      --shape mixtral-8x7b-prefill-t8k-zipf --bench 'MoEForward\.time' --results "/tmp/prefill-$run"
  done
  tar czf "$root/prefill-twice.tgz" -C /tmp prefill-a prefill-b
  step truth-prefill 120 python3 tools/asv_truth.py "$(ls /tmp/prefill-a/*/*-*.json | grep -v machine | head -1)" \
    bench_moe.MoEForward.time_forward
}
softcap_branch() {  # softcap-split gated against main on our attention, softcap_50 beside gqa_8 (its causal)
  local head
  head=$(branch softcap-split) || { echo "== softcap-split: no such branch carried"; return; }
  step gate-softcap-split 360 $vb gate "$(git rev-parse HEAD)" "$head" --factor 1.05 --family attention \
    --implementation triton --variant softcap_50 --variant gqa_8 --shape llama-3-8b-s4k \
    --bench 'AttentionForward\.time|AttentionForwardBackward\.time' --results /tmp/gate-softcap-split \
    --summary reports/gate/softcap-split-h200.md
  tar czf "$root/gate-softcap-split.tgz" -C /tmp gate-softcap-split
  # the branch's forward medians re-timed apart (do_bench), on the branch's own code
  worktree softcap-split && step truth-softcap-split 120 $(within softcap-split) python3 tools/asv_truth.py \
    "$(ls /tmp/gate-softcap-split/*/"${head:0:8}"-*.json)" bench_attention.AttentionForward.time_forward
}
gpu_numerics() {
  step gpu-tests 200 env TRITON_INTERPRET=0 VARIANTBENCH_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider \
    tests/test_gpu_numerics.py
}
lane one 0 "${2:-900}" "${1:-expert_sweep expert-tma; gpu_numerics; moe_layers}"
cat "$root/one.log"
