# Issue 17 in session 30, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s30_lanes.sh STEPS SECONDS' && await lanes 520
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 290 (never `workdir` again)
# First lease: session 29's two pending patches (reports/pending/README.md) on the GPU for the first time, and
# the documents' forward+backward on main beside pre-q-ring (30a7417), kernel by kernel: 'gpu_tests
# gluon-tests-alibi-cols alibi-cols -k gluon && { gluon_probe main causal alibi softcap_50; gluon_probe
# alibi-cols causal alibi softcap_50; fwd_gate alibi-cols; bwd_gate alibi-cols; }; item_trace;
# bwd_probe_branch main document; bwd_probe_branch pre-q-ring document' 1000.
# Results: 21 of 21; do_bench (main / alibi-cols) causal 0.9433 / 0.9363, alibi 1.0481 / 1.0548, softcap_50
# 1.0327 / 1.0628; gates same at six forwards (alibi 0.981) and five forward+backwards, documents "faster"
# 0.942 (code the branch leaves alone; the run log: 82% of main's 2.04 ms call to issue). item-trace: a
# consumer's item 1.80 us + 1.50 us a tile (causal), 2.37 + 1.58 (window), 1.96 + 1.66 (document), stores
# 0.62-1.12 us. Documents' forward+backward, main / pre-q-ring: 2.027 / 2.188 ms with the same kernels
# (dK/dV 0.974 / 0.968, dQ 0.649 / 0.640, forward 0.369 / 0.369): the host, not q-ring.
# Second lease: 'host_issue main causal document; gluon_probe main alibi causal; gluon_probe alibi-cols alibi
# causal' 400 (tools/probe_host_issue.py). Results: causal 4.419 ms a call, 0.988 to issue; documents 2.034,
# 1.677 (82%); onto an idle GPU the documents' forward issues in 0.675 ms, causal's in 0.201. do_bench alibi
# main / alibi-cols 1.0527 / 1.0277 (causal 0.9462 / 0.9520): alibi-cols dropped.
# Third lease (host-issue: the document items listed once a doc_start): 'host_issue main causal document;
# host_issue host-issue causal document; gpu_tests gluon-tests-host-issue host-issue -k gluon && {
# bwd_probe_branch host-issue document; bwd_gate host-issue; }' 700. Results: documents 2.351 ms a call,
# 97% to issue on main, 1.931 ms, 72% on host-issue (forward's issue 0.817 -> 0.310 ms; document_items 321 us
# of the host's); 19 of 19; do_bench 1.951 ms; gated faster 0.951 at documents, the rest same. Merged.
# Fourth lease: 'bwd_probe_branch main document; bwd_probe_branch host-issue document; bwd_probe_branch main
# document; bwd_probe_branch host-issue causal' 300 (truth/s30-ebfe672-b, its lanes.log holding both main
# probes). Results: documents main 2.137, 1.975 ms, host-issue 1.903; causal on host-issue 4.552.
# Fifth lease, on main after the merge: 'host_issue main causal document; bwd_probe_branch main gqa_8;
# gluon_probe main causal softcap_50 alibi' 260. Results: documents 1.889 ms a call, 68% to issue; causal
# 4.340, 22%; forward+backward gqa_8 ours 4.361 ms (441 TFLOP/s), Flex 5.501 (350), SDPA 4.062; causal
# 0.9370 ms (587 TFLOP/s, cuDNN 1.0223), softcap_50 1.0375, alibi 1.0466.
# Sixth lease, on main after the review's rework (the items listed once by the caller, no cache): 'gpu_tests
# gluon-tests-main main -k gluon; host_issue main document' 220. Results: 20 of 20 (the new listed-items test
# too); documents 1.908 ms a call, 68% to issue, the forward's 0.279. 1685 s of the session's 1800.
set -u
root=reports/truth/s30-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_gate, bwd_gate, item_trace
first='gpu_tests gluon-tests-alibi-cols alibi-cols -k gluon && { gluon_probe main causal alibi softcap_50;
  gluon_probe alibi-cols causal alibi softcap_50; fwd_gate alibi-cols; bwd_gate alibi-cols; }'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
