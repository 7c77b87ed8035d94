# Issue 17 in session 32, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s32_lanes.sh STEPS SECONDS' && await lanes 520
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 290 (never `workdir` again)
# Keep a step list on one line (a newline in it splits the steps).
# First lease (2bedbf2): 'gpu_tests gluon-tests-alibi-mma alibi-mma -k "gluon and alibi" && { gluon_probe main alibi
# causal; gluon_probe alibi-mma alibi causal; gluon_probe main causal alibi; gluon_probe alibi-mma causal alibi;
# ncu_forward alibi-mma alibi; fwd_gate alibi-mma && bwd_gate alibi-mma; }' 900 (two calls), then in a warm call
# 'gluon_probe main alibi causal; gluon_probe alibi-mma alibi causal; gluon_probe main softcap_50 alibi; gluon_probe
# alibi-mma softcap_50 alibi; gluon_probe main alibi causal softcap_50' 300 (truth/s32-2bedbf2-b). Results: 5 of 5;
# alibi first in its probe main / alibi-mma 1.0339 / 0.9803 and 1.0338 / 0.9861 ms, causal 0.9521-0.9616; ncu 2.86e8
# warp instructions, 869.5 us; gated forward alibi faster 0.965, forward+backward same at six. alibi-mma merged.
# Second lease (bwd-alibi 25c575f): 'gpu_tests gluon-tests-bwd-alibi bwd-alibi -k "gluon and alibi" && { ... }' 900:
# 3 of 6 failed at dQ (4.4e16, 19.5, NaN: ptxas gave the slope operand's registers to dS), the rest not run.
# Third lease (cc1b454, the operand in shared memory), the same: 'gpu_tests gluon-tests-bwd-alibi bwd-alibi -k "gluon
# and alibi" && { bwd_probe_branch main alibi; bwd_probe_branch bwd-alibi alibi; bwd_probe_branch main gqa_8;
# bwd_gate bwd-alibi; ratios; }' 900. Results: 6 of 6; alibi forward+backward 4.789 -> 4.338 ms, Flex 5.684; gqa_8
# 4.396, SDPA 4.093, Flex 5.507; gated alibi faster 0.922, the rest same; ratios alibi 0.946, document 1.278.
# Fourth lease: 'bwd_probe_branch main gqa_8; bwd_probe_branch dkdv-stages3 gqa_8; faster_than_main dkdv-stages3
# gqa_8 && ...' 420: 4.332 against 4.380 ms, no gate. Fifth lease: 'gpu_tests gluon-tests-doc-idle doc-idle -k "gluon
# and document" && { gluon_probe main document; gluon_probe doc-idle document; gluon_probe main document causal;
# gluon_probe doc-idle document causal; fwd_faster_than_main doc-idle document && fwd_gate doc-idle; }' 320: 6 of 6,
# document 0.3876 / 0.3860 and 0.3876 / 0.3863 ms, no gate. 1572 s of the session's 1800.
exec bash tools/session_lanes.sh s32 "$@"
