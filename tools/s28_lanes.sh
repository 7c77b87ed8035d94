# Issue 17 in session 28, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s28_lanes.sh STEPS SECONDS' && await lanes 560
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 560 (never `workdir` again)
# First lease: session 27's three pending patches (reports/pending/README.md), each on the GPU for the first
# time: rowsum-bounded (softcap's row sums on the tensor cores) tested and probed beside main; kv-chunks
# (head chunks of 2 KV heads) tested and probed at both causal layouts; the expert GEMMs' parts at
# DeepSeek-V3 prefill apart and at once, on main and on expert-split (whose layer split runs at five shares).
# Results: rowsum-bounded 18 of 18, softcap_50 1.0443 ms against main's 1.0878 (our causal 0.9527: 1.096x),
# the rest as main; kv-chunks 19 of 19, multi-head causal 1.0427 ms against main's 1.0853 (cuDNN 1.02),
# grouped 0.9500 against 0.9479; expert GEMMs at DeepSeek-V3 prefill: whole 8.84 ms, hot alone 4.51-4.57,
# cold alone 4.16, two streams 8.66-8.78 (no overlap), the split at 66-112 SMs 8.96-10.79: expert-split dropped.
# Second: 'gpu_tests gluon-tests-rowsum-kv rowsum-kv -k gluon && { gluon_probe main causal_mha $probed;
# gluon_probe rowsum-kv causal_mha $probed; fwd_gate rowsum-kv; ratios rowsum-kv; }': both forwards on one
# branch, tested, probed beside main, gated, and the cost per useful FLOP after them.
# Results: 19 of 19; do_bench (main / rowsum-kv) multi-head causal 1.0899 / 1.0438, causal 0.9522 / 0.9477,
# softcap_50 1.1269 / 1.0674, alibi 1.0725 / 1.1342 (again, warm: 1.0294-1.0299 / 1.0448-1.0519, softcap_50
# 1.1774 / 1.0964, multi-head 1.0926 / 1.0288); gate causal faster 0.953, softcap_50 faster 0.955, alibi same
# 1.014, the rest same; ratios causal 1.019, softcap_50 1.033, alibi 1.024, window 1.14, document 1.279.
# Third: 'gpu_tests gluon-tests-kv1 rowsum-kv1 -k gluon && { for b in main rowsum-kv1 rowsum-kv main rowsum-kv1;
# do gluon_probe $b causal_mha causal alibi; done; fwd_gate rowsum-kv1; bwd_gate rowsum-kv1; ratios rowsum-kv1; }':
# alibi (grouped) paid 1.5-2% for chunks of 8 query heads, so rowsum-kv1 takes one KV head a chunk (multi-head
# 1 query head, grouped main's 4), probed beside both, then gated forward and forward+backward.
# Results: 19 of 19; do_bench (main / rowsum-kv1 / rowsum-kv) multi-head causal 1.1374, 1.1350 / 1.0681,
# 1.0734 / 1.0824; causal 0.9793, 0.9765 / 0.9657, 0.9577 / 0.9665; alibi 1.0534, 1.0553 / 1.0904, 1.0501 /
# 1.0619 (grouped chunks are main's under rowsum-kv1); forward gate causal faster 0.942 (HEAD's clocks 12%
# higher), softcap_50 faster 0.949, the rest same; ratios causal 1.022, softcap_50 1.017, alibi 1.016, window
# 1.136, document 1.280. The forward+backward gate read the forward gate's results (one folder): not run.
# Fourth: 'bwd_gate rowsum-kv1' (its own folder now).
# Results: forward+backward gate same at all six, 0.989-1.005 (gate/rowsum-kv1-fwd-bwd-h200.md). Merged.
# Fifth (the 268 s left): 'moe_decode 150' on main after the merge: issue 17's MoE decode goal, last measured
# in session 21, at both decode shapes beside the family's baseline, re-timed apart.
# Results: the run stopped at its 150 s limit after the time benchmark (the ratios' run unreached); asv ms,
# triton / grouped_mm (the baseline): Mixtral softmax 0.683 / 1.14, sigmoid 0.681 / 1.17; DeepSeek-V3 softmax
# 0.732 / 1.12, sigmoid 0.828 / 1.30; re-timed apart as CUDA-graph loops (softmax): 0.677 / 1.097, 0.731 / 1.118.
set -u
root=reports/truth/s28-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_round, fwd_gate, ratios
moe_decode() {  # moe_decode LIMIT: main's MoE layers at both decodes beside the baseline, re-timed apart
  step moe-decode "$1" $vb run --family moe --tier full --shape deepseek-v3-decode-t16-zipf \
    --shape mixtral-8x7b-decode-t16-zipf --bench 'MoEForward\.time'
  truth truth-moe-decode 60 bench_moe.MoEForward.time_forward --most 4
}
first='fwd_round rowsum-bounded; gluon_probe main causal_mha $probed;
  gpu_tests gluon-tests-kv kv-chunks -k gluon && gluon_probe kv-chunks causal_mha causal;
  expert_overlap; expert_overlap expert-split; gpu_tests gpu-tests-split expert-split -k expert'
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
