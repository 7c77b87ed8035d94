# Issue 17 in session 25, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s25_lanes.sh STEPS SECONDS' && await lanes 540
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: main's Gluon GPU tests (session 24's read-through gave the kernels shared helpers and never ran
# them), main's Gluon forward probed at five variants, then session 24's pending forward schedules, each
# probed only where its tests pass: pingpong (the consumers take turns issuing products) and persistent (on
# pingpong: one program an SM); persistent gated against main with its cost per useful FLOP, then pingpong's
# gate (the two gates apart tell the persistence's own share). Its probes stopped at the document mask (the
# probe's own defect, mended in 66a0e14), so no gate ran.
set -u
root=reports/truth/s25-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_round, fwd_gate, ratios
# Second: 'numerics solo-bounded && gluon_probe solo-bounded $probed; gluon_probe main $probed; fwd_round bounded;
# fwd_round solo; fwd_gate solo-bounded; ratios solo-bounded': the persistent forward without the turns (solo), a
# softcap's exp2 without a running max (bounded), both together, probed in one lease beside main; the pair gated.
# Third: 'gluon_probe main $probed; gluon_probe solo $probed; gluon_probe bounded-plain causal softcap_50;
# gluon_probe bounded-asm causal softcap_50; gluon_probe main $probed; gluon_probe solo $probed': main and the
# persistent forward probed twice in turn (the second lease had softcap and alibi slower persistent, causal and
# the window faster), and the softcap's exp2 without a running max, its p summed as is and rounded (forward only).
# Fourth: 'gpu_tests gluon-tests-bounded25 bounded25 -k gluon && { gluon_probe bounded25 causal softcap_50 alibi;
# fwd_gate bounded25; ratios bounded25; }; fwd_gate solo': the softcap's exp2 without a running max on main's
# forward (inference only), tested, probed, gated and its cost per useful FLOP; then the persistent forward's
# gate (the probes in turn had disagreed on softcap and alibi).
# Fifth: 'gpu_tests gluon-tests-combo combo -k gluon && fwd_gate combo': the persistent forward on main with the
# bounded softcap merged (their combination compiles to 24 B spilled at softcap: inside the key loop, a review
# found after the lease; reports/pending/registers-240.patch).
first='gpu_tests gluon-tests-main main -k gluon; gluon_probe main $probed; fwd_round pingpong; pp=$?;
  fwd_round persistent && { fwd_gate persistent; ratios persistent; }; [ $pp = 0 ] && fwd_gate pingpong'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
