# The research loop's demonstrations on one GPU (issue 13), each command's wall time and verdict kept:
#   source tools/gpu_setup.sh && bash tools/research_loop_gpu.sh  ($OUT/research/ gets logs and JSON)
# 1. the README's sink-window plug-in against gqa_8 at the headline shape, cold then warm;
# 2. a candidate kernel (our Triton attention, one tile forced) judged in one command;
# 3. `compiled` beside Flex, SDPA and ours for every built-in attention and MoE variant (try's JSON);
# 4. short calls as graph replays against an independent loop (tools/replay_probe.py), again.
dest=${OUT:-/tmp}/research
mkdir -p "$dest"
budget=${BUDGET:-3600}
show='^verdict|^try:|^attention/|^moe/| x |^  ok |mismatch|FAIL|Error'
source tools/budgeted.sh

step sinks-cold 240 python3 -m variantbench try --plugin tools/plugins/sinks.py sink_window --against gqa_8 --json "$dest/sinks-cold.json"
step sinks-warm 240 python3 -m variantbench try --plugin tools/plugins/sinks.py sink_window --against gqa_8 --json "$dest/sinks-warm.json"
step forced-tile 240 python3 -m variantbench try --plugin tools/plugins/forced_tile.py gqa_8 --json "$dest/forced-tile.json"
for variant in causal mqa sliding_window_1024 document softcap_50 alibi prefix_lm full; do
  step "attention-$variant" 240 python3 -m variantbench try "$variant" --json "$dest/attention-$variant.json"
done
step moe-softmax_topk 300 python3 -m variantbench try softmax_topk --json "$dest/moe-softmax_topk.json"
step moe-sigmoid_grouped_topk 300 python3 -m variantbench try sigmoid_grouped_topk \
  --json "$dest/moe-sigmoid_grouped_topk.json"
step replay 240 python3 tools/replay_probe.py
