# Issue 16's first split-block figures on two GPUs (nvidia-h200-x2) in what is left of a device session:
#   run(kind="nvidia-h200-x2", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh && bash tools/block_x2.sh
# The llama-3-8b block (the family baseline) and Mixtral's (GQA + MoE) at prefill-b4-s4k: fused on one
# GPU, tensor- and sequence-parallel over two (forward, forward+backward of the fused one, metrics,
# parallel efficiency, collectives' share, composition overhead), then `try` of Mixtral's block against
# llama-3-8b's, re-timed apart by tools/try_truth.py. Logs: $OUT/block-x2/.
dest=${OUT:-/tmp}/block-x2
budget=${BUDGET:-330}
mkdir -p "$dest"
show='^verdict|^try:|MISMATCH|ERROR|passed|asv finished|efficiency|share|overhead|block/'
source tools/budgeted.sh
step run 230 python3 -m variantbench run --family block --tier full --shape prefill-b4-s4k --variant llama-3-8b \
  --variant mixtral-8x7b --implementation fused --implementation tensor_parallel --implementation sequence_parallel \
  --no-precheck --bench 'BlockForward\.|BlockForwardBackward\.time|BlockMetrics|BlockParallel|BlockComposition'
step try 80 python3 -m variantbench try mixtral-8x7b --shape prefill-b4-s4k --json "$dest/try-mixtral.json"
step truth 40 python3 tools/try_truth.py "$dest/try-mixtral.json"
tar czf "$OUT/results.tgz" reports/results
