# Issue 17 in session 31, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s31_lanes.sh STEPS SECONDS' && await lanes 520
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 290 (never `workdir` again)
# First lease: session 30's pending host-launch (descriptor_layout and the capability cached), beside main:
# 'host_issue main causal document; host_issue host-launch causal document' (its `first` split the rest at a
# newline: keep a step list on one line). Results: main causal 4.345 ms a call, 26% to issue, documents
# 1.955, 83%; host-launch 4.412, 36% and 1.908, 76%; a refusal 19.5 -> 9.5 us, the launcher's build 94 -> 41.5.
# Second call, warm: 'gpu_tests gluon-tests-host-launch host-launch -k gluon && bwd_gate host-launch;
# gluon_probe main causal alibi softcap_50' 600. Results: 20 of 20; gated same at six forward+backwards;
# causal 0.9517 ms (578 TFLOP/s, cuDNN 1.0438), alibi 1.0716, softcap_50 1.0416. host-launch merged.
# Second lease: 'ncu_forward main causal alibi document softcap_50' 500 (73 s; the summary's SASS reader
# failed on the documents' second kernel, mended). Results: alibi 3.55e8 warp instructions against causal's
# 2.82e8, tensor pipe 65% busy against 77% (softcap_50 67%, document 60%).
# Third lease (alibi-fold c6fd0fa): 'gpu_tests gluon-tests-alibi-fold alibi-fold -k gluon && { gluon_probe
# main causal alibi softcap_50; gluon_probe alibi-fold causal alibi softcap_50; ncu_forward alibi-fold alibi;
# fwd_gate alibi-fold && bwd_gate alibi-fold; }' 800 (two calls). Results: 21 of 21; do_bench main / fold
# alibi 1.0556 / 1.0824 with softcap_50 1.0438 / 1.0786 (the second probe's state); ncu alibi 3.28e8
# instructions, 931 us against 965; gated same at six forwards (alibi 0.973) and six forward+backwards.
# Fourth lease (5a32d97, every other case main's SASS): 'gpu_tests gluon-tests-alibi-fold alibi-fold -k "gluon
# and alibi" && { gluon_probe main alibi causal; gluon_probe alibi-fold alibi causal; gluon_probe main causal
# alibi; gluon_probe alibi-fold causal alibi; fwd_gate alibi-fold; }' 520 (truth/s31-1b62cea-b). Results: 3 of
# 3; alibi main / fold 1.0473 / 1.0191 and 1.0775 / 1.0480 ms, causal 0.9351 / 0.9369 and 0.9353 / 0.9346;
# gated same at six (alibi 0.974). alibi-fold merged.
# Fifth lease, on main after both merges: 'ratios' 200. Results: x baseline per useful FLOP causal 1.023,
# window 1.090, document 1.299, softcap_50 1.007, alibi 0.989, prefix_lm 0.892. 1673 s of the session's 1800.
set -u
root=reports/truth/s31-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_gate, bwd_gate, host_issue
first='ratios'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
