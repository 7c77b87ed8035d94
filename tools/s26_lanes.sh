# Issue 17 in session 26, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s26_lanes.sh STEPS SECONDS' && await lanes 540
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: main's Gluon GPU tests (session 25's review added an assertion and a read-through shared `fill`,
# neither run), then session 25's pending registers-240 (the forward's second consumer at 240 registers: no
# spill in the bounded softcap's key loop) tested, probed beside main, and gated where right; the `untested`
# experiment (the Gluon walk with the interval test compiled out at documents and windows: wrong output, timed
# only) probed to price the test; main's cost per useful FLOP after the persistent forward. Results: main 13 of
# 13; registers-240 13 of 13 but softcap_50 1.1820 ms against main's 1.1044 (gate same 1.031): dropped; the
# test compiled out made the document 0.4555 -> 0.4101 ms and the window 0.5056 -> 0.4778.
# Second: 'gpu_tests gluon-tests-dynamic dynamic -k gluon; gpu_tests mutant-claims dynamic-mutant -k takes_every;
# gluon_probe main $probed; gluon_probe dynamic $probed; fwd_gate dynamic; ratios dynamic': programs claim
# their work items (an offline count put the document mask's busiest program at 1.22x the mean under the
# fixed share), tested, its test shown to fail on a counter zeroed once (the mutant), probed, gated, its ratios.
# Results: 14 of 14, the mutant failed (every lse NaN on its second launch); but slower: gate (the
# documents same) gqa_8 1.036, alibi 1.041, softcap_50 1.054, window 1.055 (the claim's round trip held the
# producer before each item's key tiles: Triton hands an atomic's result to the warp at once).
# Third: 'gpu_tests gluon-tests-dynamic dynamic -k gluon && { gluon_probe dynamic $probed; gluon_probe main
# $probed; fwd_gate dynamic; }': the claim made once the item's first key tile is on its way.
# Results: 14 of 14; gate document faster 0.951, the rest same at 1.012-1.029 (HEAD's clocks 3.6-5.7% lower);
# do_bench document 0.4429 ms against main's 0.4624, the window, alibi and softcap_50 1.4-1.9% slower. Merged
# for the document mask alone (dcfc8af: the other masks compile to main's SASS).
set -u
root=reports/truth/s26-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_round, fwd_gate, ratios
first='gpu_tests gluon-tests-main main -k gluon; gluon_probe main $probed; fwd_round registers-240; r=$?;
  gluon_probe untested causal sliding_window_1024 document; [ $r = 0 ] && fwd_gate registers-240; ratios'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
