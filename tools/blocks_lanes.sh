# What issues 15 and 16 still lack after session 14, on one nvidia-h200 or one nvidia-h200-x2 (about
# 25 minutes held):
#   git bundle create .vbgit.bundle main alibi-fold
#   run(kind=..., carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/blocks_lanes.sh' && await lanes 540
#   (then `source tools/gpu_detached.sh && await lanes 560` within 30 s, until it says exit)
# (15, 16) The default tier timed whole at HEAD, first and with nothing beside it on its GPU: 3311c6e's
#   took 615 s beside another lane; causal MHA left it for the full tier since.
# (16) Every block at prefill-b4-s4k through compiled and liger as asv medians, forward then
#   forward+backward (session 14 had only the setups' estimates of compiled's and liger's forwards);
#   the reference, which is no point of asv's grid, through `try` of three blocks, every call re-timed
#   apart; Qwen3-Next's new decode step (the convolution and rule states) at decode-b64-kv4k.
# (17) On two GPUs, after the tier on GPU 0: branch alibi-fold (ALiBi's score in one FMA) gated against
#   main at 1.05, forward and forward+backward of ours, alibi and its baseline's kernel (gqa_8).
# On two GPUs the default tier has GPU 0 and the blocks GPU 1; on one, the blocks follow the tier.
set -u
root=reports/truth/blocks-$(git rev-parse --short HEAD)
mkdir -p "$root"
vb="python3 -m variantbench"
show='MISMATCH|ERROR|asv finished|Traceback|^verdict|%|do_bench|graph'
default_tier() {
  local t0=$SECONDS
  timeout 720 $vb run > "$root/default.log" 2>&1
  echo "== default tier: exit $? in $((SECONDS - t0))s"
  grep -E "precheck:|asv finished" "$root/default.log"
}
blocks() {  # blocks BUDGET: the blocks' steps, each cut at the budget (tools/budgeted.sh)
  local budget=$1 dest=$root/blocks
  mkdir -p "$dest"
  source tools/budgeted.sh
  # the decode step first: short, and measured nowhere yet
  step try-decode 180 $vb try qwen3-next --shape decode-b64-kv4k --json "$dest/try-decode.json"
  step truth-decode 120 python3 tools/try_truth.py --fused-only "$dest/try-decode.json"
  for bench in 'BlockForward\.time' 'BlockForwardBackward\.time'; do
    step "${bench%%\\*}" 600 $vb run --family block --tier full --shape prefill-b4-s4k --implementation compiled \
      --implementation liger --no-precheck --bench "$bench"
  done
  step try-prefill 420 $vb try llama-3-8b --shape prefill-b4-s4k --json "$dest/try-llama.json"
  step try-moe 300 $vb try qwen3-30b-a3b --shape prefill-b4-s4k --json "$dest/try-qwen3.json"
  step truth 240 python3 tools/try_truth.py --fused-only "$dest"/try-llama.json "$dest"/try-qwen3.json
}
gate_alibi() {
  local t0=$SECONDS
  local head  # the bundle's other branches arrive as origin/<name> (tools/gpu_setup.sh clones main)
  head=$(git rev-parse -q --verify origin/alibi-fold || git rev-parse -q --verify alibi-fold) \
    || { echo "== gate alibi-fold: no such branch carried"; return; }
  timeout 600 $vb gate "$(git rev-parse main)" "$head" --factor 1.05 --family attention --variant alibi --variant gqa_8 \
    --implementation triton --summary reports/gate/alibi-fold-h200.md > "$root/gate-alibi.log" 2>&1
  echo "== gate alibi-fold: exit $? in $((SECONDS - t0))s"
  tail -n 20 "$root/gate-alibi.log"
}
gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then
  (export CUDA_VISIBLE_DEVICES=0 HOME=/tmp/home-default; default_tier; gate_alibi) &
  (export CUDA_VISIBLE_DEVICES=1 HOME=/tmp/home-blocks; blocks 1450) > "$root/blocks.log" 2>&1 &
  wait
  cat "$root/blocks.log"
else
  default_tier
  blocks 1450
fi
