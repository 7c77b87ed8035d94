# First GPU look at the block family (issue 16), most wanted first within BUDGET seconds (default 900),
# steps that would start past it skipped and said so:
#   source tools/gpu_setup.sh && BUDGET=800 bash tools/block_gpu.sh     (logs and JSON: $DEST)
# On one GPU: every recipe checked at its prefill and decode shapes (fused with gradients, compiled where
# it runs), the fused blocks' forward and forward+backward timed with their composition overheads, and
# `try` of each recipe against the llama-3-8b block, re-timed apart by tools/try_truth.py. On 2 or 4
# GPUs (the x2 and x4 kinds) also the tensor- and sequence-parallel blocks: checked on every rank,
# their parallel efficiency and collectives' share.
dest=${DEST:-${OUT:-/tmp}/block}
budget=${BUDGET:-900}
mkdir -p "$dest"
vb="python3 -m variantbench"
show='^verdict|^try:|MISMATCH|ERROR|passed|largest|composition|parallel'
source tools/budgeted.sh
step check 300 $vb check --family block --tier full --implementation fused --implementation reference \
  --implementation tensor_parallel --implementation sequence_parallel
step run 420 $vb run --family block --tier full --shape prefill-b4-s4k --shape decode-b64-kv4k \
  --implementation fused --implementation tensor_parallel --implementation sequence_parallel --no-precheck
for recipe in gemma-2-9b-local qwen3-30b-a3b vit-l16 llama-3-8b-depth; do
  step "try-$recipe" 200 $vb try "$recipe" --shape prefill-b4-s4k --json "$dest/try-$recipe.json"
done
step truth 300 python3 tools/try_truth.py "$dest"/try-*.json
