# First GPU look at the attention families built on the CPU (issues 14 and 15) and the research loop's
# last row (issue 13), on one GPU, most wanted first; steps that would start past BUDGET seconds
# (default 900) are skipped and said so, so the job fits what is left of a device session:
#   source tools/gpu_setup.sh && BUDGET=800 bash tools/new_attention_gpu.sh   (logs and JSON: $DEST)
# Carry fla-core's wheel (bash ../shared/tools/gpu-wheels.sh nvidia-ml-py fla-core einops) for the
# linear family's baseline. Each command's exit and wall time is printed; a failure stops nothing.
# Every try's figures are then re-timed apart from the suite (tools/try_truth.py).
dest=${DEST:-${OUT:-/tmp}/new-attention}
budget=${BUDGET:-900}
mkdir -p "$dest"
vb="python3 -m variantbench"
show='^verdict|^try:|mismatch|FAIL|[Ee]rror|passed| ok |largest'
source tools/budgeted.sh
step moe-sigmoid_grouped_topk 200 $vb try sigmoid_grouped_topk --shape mixtral-8x7b-prefill-t8k-uniform \
  --json "$dest/moe-sigmoid_grouped_topk.json"
step check 240 $vb check --family mla --family linear --family paged --tier full \
  --shape deepseek-v3-mla-decode-b64-kv8k --shape deepseek-v3-mla-prefill-s4k --shape qwen3-next-t16k \
  --shape llama-3-8b-paged16-b64-mixed8k --shape llama-3-8b-paged16-b1-kv128k
step check-sparse 200 $vb check --family attention --variant block_topk_16 --variant dsa_topk_2048 \
  --variant causal --tier full --shape llama-3-8b-s4k --shape llama-3-8b-chunk512-kv8k
step try-mla-decode 150 $vb try mla --shape deepseek-v3-mla-decode-b64-kv8k --json "$dest/mla-decode.json"
step try-gdn-vs-gqa 200 $vb try gated_deltanet --shape qwen3-next-t16k --against attention/gqa_8@llama-3-8b-s16k \
  --json "$dest/gdn-vs-gqa.json"
step try-paged 200 $vb try gqa_decode --shape llama-3-8b-paged16-b64-kv8k --shape llama-3-8b-paged16-b1-kv128k \
  --json "$dest/paged.json"
step try-sparse 150 $vb try block_topk_16 --shape llama-3-8b-s16k --json "$dest/sparse.json"
step truth 300 python3 tools/try_truth.py "$dest"/*.json
step fwd-bwd 240 $vb run --family attention --implementation triton --implementation sdpa --shape llama-3-8b-s4k \
  --bench 'AttentionForwardBackward\.' --no-precheck
step try-mla-prefill 150 $vb try mla --shape deepseek-v3-mla-prefill-s4k --against attention/gqa_8@llama-3-8b-s4k \
  --json "$dest/mla-vs-gqa.json"
step try-dsa 150 $vb try dsa_topk_2048 --shape llama-3-8b-s16k --json "$dest/dsa.json"
