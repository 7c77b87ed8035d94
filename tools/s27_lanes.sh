# Issue 17 in session 27, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s27_lanes.sh STEPS SECONDS' && await lanes 560
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: session 26's three pending forwards, each tested on the GPU first: head-chunks (the multi-head
# causal regression, probed beside main at causal_mha), rowsum (row sums on the tensor cores; probed even if
# its lse test fails, to price it before deciding its tolerance), doc-items (documents' own items).
# Results: head-chunks 16 of 16 (its causal_mha probe stopped: the probe gave v 8 heads); rowsum an illegal
# memory access in all 14 tests; doc-items 16 of 16, document 0.3942 ms (head-chunks' probe: 0.4939).
# Second: 'gluon_probe main causal_mha causal document; gluon_probe head-chunks causal_mha;
# gpu_tests gluon-tests-chunks-docs chunks-docs -k gluon && { gluon_probe chunks-docs causal_mha causal document;
# fwd_gate chunks-docs; }': both patches on one branch (chunks-docs), tested, probed beside main and gated.
# Results: 18 of 18; do_bench causal_mha 1.1463 ms on main, 1.0894 head-chunks, 1.0875 chunks-docs (cuDNN
# 1.02-1.03); causal 0.9692 -> 0.9526; document 0.4445 -> 0.3937. Gate: causal faster 0.935, document 0.910,
# alibi 0.969, the rest same (gate/chunks-docs-h200.md).
# Third: 'for b in chunks-docs chunk1 chunk2 chunk8; do gluon_probe $b causal_mha causal; done;
# bwd_gate chunks-docs; ratios chunks-docs': multi-head causal still 1.06x cuDNN where grouped heads run
# 0.94x, so the chunk's size is probed (chunkN: HEAD_CHUNK = N, probe only); the backward reads the
# document items' lse, so forward+backward is gated too; the cost per useful FLOP after both.
# Results: causal_mha / causal gluon ms: chunks-docs 1.1122 / 0.9522, chunk1 1.0491 / 0.9946, chunk2 1.0548 /
# 0.9726, chunk8 1.0659 / 0.9469 (cuDNN 1.03 / 1.01); forward+backward gate same at all six; ratios causal
# 1.108, window 1.123, document 1.281, softcap_50 1.067, alibi 1.010. chunks-docs merged (6f6a25a).
# Fourth: 'gpu_tests gluon-tests-rowsum rowsum -k gluon; gluon_probe rowsum $probed; gluon_probe main $probed;
# fwd_gate rowsum': rowsum with the ones tile K-major (a review: ptxas 12.8 built the MN-major n = 8
# operand's descriptors from unwritten uniform registers), tested (its lse moves to the rounded sum's:
# the claims test's atol 1e-3 may fail), probed beside main, gated.
# Results: 13 of 18 (the 5 lse checks at atol 1e-3: 2.0-2.4e-3 off); softcap_50 1.0375 ms against main's
# 1.0744, causal 0.9783 against 0.9436, the window 0.5131 against 0.4940; gate causal slower 1.030, softcap_50
# same 0.963. Dropped; its softcap half is reports/pending/rowsum-bounded.patch.
set -u
root=reports/truth/s27-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_round, fwd_gate, ratios
first='fwd_round head-chunks; gluon_probe main causal_mha $probed; gluon_probe head-chunks causal_mha;
  gpu_tests gluon-tests-rowsum rowsum -k gluon; gluon_probe rowsum $probed;
  gpu_tests gluon-tests-doc doc-items -k gluon && gluon_probe doc-items document'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
