# First GPU look at the attention families built on the CPU (issues 14 and 15), on one GPU:
#   source tools/gpu_setup.sh && bash tools/new_attention_gpu.sh   ($OUT/new-attention/ gets logs and JSON)
# Carry fla-core's wheel (bash ../shared/tools/gpu-wheels.sh nvidia-ml-py fla-core einops) for the
# linear family's baseline. Each command's exit and wall time is printed; a check failure stops nothing.
dest=${OUT:-/tmp}/new-attention
mkdir -p "$dest"
timed() {  # timed NAME LIMIT COMMAND...
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  timeout "$limit" "$@" > "$dest/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - t0))s"
  grep -E "^verdict|^try:|mismatch|FAIL|[Ee]rror|passed" "$dest/$name.log" | tail -n 12
}
vb="python3 -m variantbench"
timed check 600 $vb check --family attention --family mla --family linear --family paged --variant block_topk_16 --variant dsa_topk_2048 --variant mla \
  --variant gated_deltanet --variant gqa_decode --tier full
timed check-backward 400 $vb check --family attention --implementation triton --tier default
timed fwd-bwd 500 $vb run --family attention --implementation triton --implementation flex --implementation sdpa \
  --shape llama-3-8b-s4k --bench 'AttentionForwardBackward\.' --no-precheck
timed try-mla-decode 240 $vb try mla --shape deepseek-v3-mla-decode-b64-kv8k --json "$dest/mla-decode.json"
timed try-mla-prefill 240 $vb try mla --shape deepseek-v3-mla-prefill-s4k --json "$dest/mla-prefill.json"
timed try-sparse 300 $vb try block_topk_16 --shape llama-3-8b-s16k --shape llama-3-8b-s64k --json "$dest/sparse.json"
timed try-dsa 300 $vb try dsa_topk_2048 --shape llama-3-8b-s16k --json "$dest/dsa.json"
timed try-dense-64k 300 $vb try causal --shape llama-3-8b-s64k --json "$dest/dense-64k.json"
timed try-gdn 300 $vb try gated_deltanet --shape qwen3-next-t4k --shape qwen3-next-t16k --shape qwen3-next-t64k \
  --json "$dest/gdn.json"
timed try-gdn-vs-gqa 300 $vb try gated_deltanet --shape qwen3-next-t16k --against attention/gqa_8@llama-3-8b-s16k \
  --json "$dest/gdn-vs-gqa.json"
timed try-mla-vs-gqa 300 $vb try mla --shape deepseek-v3-mla-prefill-s4k --against attention/gqa_8@llama-3-8b-s4k \
  --json "$dest/mla-vs-gqa.json"
timed try-paged 300 $vb try gqa_decode --shape llama-3-8b-paged16-b64-kv8k --shape llama-3-8b-paged64-b64-kv8k \
  --shape llama-3-8b-paged16-b1-kv128k --json "$dest/paged.json"
