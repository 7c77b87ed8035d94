# Issue 17 in session 29, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s29_lanes.sh STEPS SECONDS' && await lanes 560
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: session 28's two pending patches (reports/pending/README.md) on the GPU for the first time, together
# as q-doc (q-ring, then doc-early rebased on it: one conflict, the document rows' last store), tested; where
# right, the cost per item on main and on q-doc (tools/probe_item_cost.py), and the five probed forwards on
# main, q-doc and q-ring alone; where wrong, each patch's own round.
# Results: 19 of 19; do_bench (main / q-doc / q-ring) causal 0.9454 / 0.9344 / 0.9340, softcap_50 1.0496 /
# 1.0583 / 1.0287, alibi 1.0381 / 1.1130 / 1.0434, sliding_window_1024 0.5112 / 0.5071 / 0.4907, document
# 0.4006 / 0.3984 / 0.3996; item cost: the fit is ill-posed (every mask has 4096 items, and the windows'
# masked tiles, about two an item, move with them: per item -1.9 us on main), but window_128's 2-tile items
# cost 7.0 us where two of full's tiles cost 3.6 us. doc-early dropped.
# Second call, warm (the first's environment gone: a warm call sources tools/gpu-env.sh): 'fwd_gate q-ring;
# gluon_probe main sliding_window_1024 causal softcap_50; gluon_probe q-ring ...': the gate failed (no asv on
# the path); probes (main / q-ring) window 0.5134 / 0.4890, causal 0.9456 / 0.9357, softcap_50 1.0779 / 1.0647.
# Third call: 'fwd_gate q-ring; ratios q-ring': gate same at all six (window 0.968, softcap_50 0.976, gqa_8
# 0.985); ratios on q-ring causal 1.02, gqa_8 0.905, window 1.09, document 1.298, softcap_50 1.007, alibi
# 1.019. Merged.
# Second lease: 'gpu_tests gluon-tests-s0-ahead s0-ahead -k gluon && { gluon_probe main $probed; gluon_probe
# s0-ahead $probed; gluon_probe main causal; gluon_probe s0-ahead causal; }; bwd_probe_branch main gqa_8':
# each item's first S issued during the last item's final P V and stores, tested and probed beside main twice,
# and main's forward+backward beside Flex and SDPA (issue 17's 1.2x Flex, last measured in session 24).
# Results: 19 of 19; do_bench (main / s0-ahead) causal 0.9340 / 0.9413, softcap_50 1.0325 / 1.0722, alibi
# 1.0481 / 1.0818, window 0.4886 / 0.4940, document 0.3967 / 0.3957: dropped. Forward+backward at gqa_8
# (tools/probe_attention_backward.py): ours 4.334 ms (444 TFLOP/s), Flex 5.470 (352): 1.262x; SDPA 4.054.
# Third lease: 'gpu_tests gluon-tests-diag-half diag-half -k gluon && { gluon_probe main $probed; gluon_probe
# diag-half $probed; fwd_gate diag-half; bwd_gate diag-half; }': the first consumer's diagonal tile at half
# width (its rows see none of the tile's last 64 keys), tested, probed beside main, gated both ways.
# Results: 19 of 19; do_bench (main / diag-half) causal 0.9281 / 0.9314, softcap_50 1.0106 / 1.0682, alibi
# 1.0416 / 1.0706, window 0.4792 / 0.4757, document 0.3865 / 0.3821; forward gate same at six (window 0.988,
# document 0.999); forward+backward same at five, document noisy 1.167 (2.402 ms on main, 2.803 on the
# branch; 2.089 at ce3da13 in session 28). Dropped. 1651 s of the session's 1800 used.
set -u
root=reports/truth/s29-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_round, fwd_gate, ratios
first='if gpu_tests gluon-tests-q-doc q-doc -k gluon; then item_cost; item_cost q-doc; gluon_probe main $probed;
  gluon_probe q-doc $probed; gluon_probe q-ring $probed; else fwd_round q-ring; fwd_round doc-early; fi'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
