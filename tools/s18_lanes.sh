# What issues 16 and 17 lack after session 17, on one nvidia-h200 (about 27 minutes held):
#   git bundle create .vbgit.bundle main [BRANCH ...]   (session 19: main expert-tma)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s18_lanes.sh [STEPS SECONDS]' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# First the numerics only a GPU shows (tests/test_gpu_numerics.py: the router's tensor-core and GEMM
# paths with exact ties, MLA's gradients through cuDNN in a block's layout) and cuDNN's MLA backward
# at 128 heads, alone and after a contiguous-gradient call (session 17's error's cause is not pinned).
# Issue 16: DeepSeek-V3's block forward+backward through fused and liger (session 17 measured fused
# once, 162.6 ms, with the routing-aware check and MLA's gradient in its output's strides), re-timed
# apart. Issue 17: branch router-gemm (the router's logits from one GEMM at prefill) gated against main
# on our MoE layer, DeepSeek-V3 prefill profiled on it. Then main's default tier (bwd-speed, ALiBi's
# FMA, router-dot and the check's changes all landed since 4e7ef39's run), re-timed apart.
# The branch gate keeps its results out of reports/results (main's history): under /tmp, its summary
# under reports/gate.
set -u
root=reports/truth/s18-$(git rev-parse --short HEAD)
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, within, results, truth, lane, dsv3_fwd_bwd, moe_branch, moe_layers, default_tier
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |largest|^[a-z]+/|BAD|routed|decided'
gpu_numerics() {  # tests/test_gpu_numerics.py on main, then on router-gemm; cuDNN's MLA backward pinned down
  step gpu-tests 200 env TRITON_INTERPRET=0 VARIANTBENCH_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider \
    tests/test_gpu_numerics.py
  worktree router-gemm && step gpu-tests-router-gemm 120 $(within router-gemm) TRITON_INTERPRET=0 \
    VARIANTBENCH_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider tests/test_gpu_numerics.py -k routers
  step sdpa-128-heads 60 python3 tools/probe_sdpa_backward.py --heads 128 --batch 2 --tokens 2048 --transposed-grad
  step sdpa-after-contiguous 60 python3 tools/probe_sdpa_backward.py --heads 128 --batch 2 --tokens 2048 \
    --transposed-grad --after-contiguous
}
routing_rule() {  # DeepSeek-V3's block check, rows weighed against their own error (2568def) and against the call's
  worktree s18-start && step probe-dsv3-own-error 150 $(within s18-start) python3 tools/probe_block_gradients.py \
    deepseek-v3 fused prefill-b4-s4k
  step probe-dsv3 150 python3 tools/probe_block_gradients.py deepseek-v3 fused prefill-b4-s4k
}
# Arguments: the steps (these functions) and the lane's seconds; by default all of them in 1600 s. Session 18
# split them over two leases: 'gpu_numerics; dsv3_fwd_bwd; default_tier' 1000 (the check refused
# DeepSeek-V3), then 'routing_rule; dsv3_fwd_bwd; ...' with the branches rebuilt (their commits did not
# survive into session 18's checkout) and the bundle's branch s18-start at 2568def, the first lease's commit. Session 19:
# 'gpu_numerics; moe_layers; moe_branch expert-tma; default_tier' with reports/pending/expert-tma.patch
# applied on branch expert-tma (after tools/sweep_expert_gemm.py on it).
lane one 0 "${2:-1600}" "${1:-gpu_numerics; dsv3_fwd_bwd; moe_branch router-gemm; moe_branch expert-gemm; default_tier}"
cat "$root/one.log"
