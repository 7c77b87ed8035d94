# The open items that need a GPU, most wanted first, as one detached job on one GPU (nvidia-h200):
#   git bundle create .vbgit.bundle main aa-h200 planted-h200-6pct
#   run(carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh && source tools/gpu_detached.sh && workdir \
#     && detach open 'bash tools/open_items_gpu.sh' && await open 560      (then `await open 560` within 30 s)
# 1. issue 12: the planted slowdown at factor 1.05 (tools/gate_f105.sh, ~400 s);
# 2. issues 14, 15: the Flex fixes made on the CPU (paged decode, block selection with gradients);
# 3. issues 15, 16: HEAD's default tier, timed whole (it was 625 s before this week's additions; the
#    results are HEAD's history, the asv log says which cases cost what);
# 4. issue 16: the blocks (tools/block_gpu.sh) with what is left.
# Logs and JSON: reports/truth/open-items-<sha>/, packed by `await` with the rest of reports/.
set -u
budget=${BUDGET:-1500}
dest=reports/truth/open-items-$(git rev-parse --short HEAD)
mkdir -p "$dest"
show='^verdict|MISMATCH|ERROR|passed|Regression verdicts|slower|asv finished|measured '
source tools/budgeted.sh
step planted-gate 600 bash tools/gate_f105.sh
step flex-fixes 240 python3 -m variantbench check --family attention --family paged --variant block_topk_16 \
  --variant gqa_decode --implementation flex --tier full --shape llama-3-8b-s4k --shape llama-3-8b-paged16-b64-kv8k \
  --shape llama-3-8b-paged16-b64-mixed8k --shape llama-3-8b-paged16-b1-kv128k
step default-tier 900 python3 -m variantbench run
DEST=$dest/block BUDGET=$((budget - SECONDS)) bash tools/block_gpu.sh
