# Sourced by the lease scripts that run steps in lanes (tools/s16_lanes.sh to tools/s24_lanes.sh), after
# they set `root` (the logs' folder): a lane is a list of steps (tools/budgeted.sh) on one GPU.
vb="python3 -m variantbench"
branch() {  # the bundle's other branches arrive as origin/<name> (tools/gpu_setup.sh clones main)
  git rev-parse -q --verify "origin/$1" || git rev-parse -q --verify "$1"
}
worktree() {  # worktree BRANCH: its checkout at /tmp/BRANCH, or a line saying it was not carried
  local commit
  commit=$(branch "$1") || { echo "== $1: no such branch carried"; return 1; }
  rm -rf "/tmp/$1" && git worktree add -f "/tmp/$1" "$commit" > /dev/null 2>&1
}
within() {  # within BRANCH: the words that run a step's command in the branch's checkout on its own code
  # (the project is installed from the main checkout, and a probe run from tools/ would import that)
  echo "env -C /tmp/$1 PYTHONPATH=/tmp/$1${PYTHONPATH:+:$PYTHONPATH}"
}
on_branch() {  # on_branch BRANCH STEP LIMIT COMMAND...: a step run in the branch's checkout, on its own code
  local b=$1 name=$2 limit=$3
  shift 3
  worktree "$b" && step "$name" "$limit" $(within "$b") "$@"
}
results() {  # this commit's results file (the machine's name depends on the lease's kind)
  ls -t reports/results/*/"$(git rev-parse --short=8 HEAD)"-*.json 2>/dev/null | head -1
}
truth() {  # truth NAME LIMIT BENCHMARK [ARGS]: this commit's asv medians of BENCHMARK re-timed apart
  local name=$1 limit=$2
  shift 2
  step "$name" "$limit" python3 tools/asv_truth.py "$(results)" "$@"
}
lane() {  # lane NAME GPU BUDGET 'STEPS': the steps (the script's functions) on that GPU, logs under $root/NAME
  local name=$1 gpu=$2
  mkdir -p "$root/$name" "/tmp/home-$name"
  (export CUDA_VISIBLE_DEVICES=$gpu HOME=/tmp/home-$name; dest=$root/$name budget=$3
   source tools/budgeted.sh; eval "$4") > "$root/$name.log" 2>&1
  echo "== lane $name (GPU $gpu): done at ${SECONDS}s (each step's exit code is in its line above)"
}
dsv3_fwd_bwd() {  # DeepSeek-V3's block forward+backward through fused and liger, re-timed apart (issue 16)
  step dsv3-fwd-bwd 300 $vb run --family block --tier full --shape prefill-b4-s4k --variant deepseek-v3 \
    --implementation fused --implementation liger --no-precheck --bench 'BlockForwardBackward\.time'
  truth truth-dsv3-fwd-bwd 240 bench_block.BlockForwardBackward.time_forward_backward --most 2
}
attention_gate() {  # attention_gate BRANCH LIMIT BENCH [NAME]: our attention gated against main at llama-3-8b-s4k
  # causal is the one multi-head variant: 4x the grouped variants' keys and values (256 MB against 64 MB,
  # the H200's L2 50 MB); without it the persistent forward's cost there (1.195x the baseline per useful
  # FLOP, 0.971 before) went unseen (session 26)
  # (NAME, gate-BRANCH where not given: the step's log, results and summary, apart for each gate; in
  # session 28 a forward+backward gate after a forward gate of one branch shared its folder and compared
  # the forward's results, which the gate itself no longer does: it compares the rows --bench selects)
  local head name=${4:-gate-$1}
  head=$(branch "$1") || { echo "== $1: no such branch carried"; return; }
  step "$name" "$2" $vb gate "$(git rev-parse HEAD)" "$head" --factor 1.05 --family attention \
    --implementation triton --variant gqa_8 --variant causal --variant softcap_50 --variant alibi --variant document \
    --variant sliding_window_1024 --shape llama-3-8b-s4k --bench "$3" --results "/tmp/$name" --summary "reports/gate/${name#gate-}-h200.md"
  tar czf "$root/$name.tgz" -C /tmp "$name"
}
moe_branch() {  # moe_branch BRANCH: gated against main on our MoE layer at four shapes, DeepSeek-V3 prefill profiled
  local head
  head=$(branch "$1") || { echo "== $1: no such branch carried"; return; }
  step "gate-$1" 300 $vb gate "$(git rev-parse HEAD)" "$head" --factor 1.05 --family moe --implementation triton \
    --tier full --shape deepseek-v3-prefill-t4k-zipf --shape deepseek-v3-decode-t16-zipf \
    --shape mixtral-8x7b-prefill-t8k-zipf --shape mixtral-8x7b-decode-t16-zipf --bench 'MoEForward\.time' \
    --results "/tmp/gate-$1" --summary "reports/gate/$1-h200.md"
  # the branch's timed figures too, beside the summary (kept out of reports/results, main's history)
  # (under the logs' folder: a detached lane's $OUT is the first call's, emptied before the next)
  tar czf "$root/gate-$1.tgz" -C /tmp "gate-$1"
  on_branch "$1" "profile-$1" 100 python3 tools/probe_kernels.py moe \
    sigmoid_grouped_topk triton deepseek-v3-prefill-t4k-zipf
}
moe_layers() {  # main's MoE layers at both decodes and DeepSeek-V3 prefill, beside the family's baseline
  # (issue 17: decode within budget, DeepSeek-V3 prefill at 65% of roofline)
  step moe-layers 300 $vb run --family moe --tier full --shape deepseek-v3-decode-t16-zipf \
    --shape mixtral-8x7b-decode-t16-zipf --shape deepseek-v3-prefill-t4k-zipf
  truth truth-moe-layers 200 bench_moe.MoEForward.time_forward --most 8
}
moe_prefill() {  # moe_prefill [BRANCH]: DeepSeek-V3 prefill through our layer, its time, percent of roofline and
  # cost against the family's baseline (issue 17: 65% of roofline), on main or a branch (results stay in its checkout)
  local run="$vb"
  [ -n "${1:-}" ] && { worktree "$1" || return; run="$(within "$1") $vb"; }
  step "moe-prefill${1:+-$1}" 300 $run run --family moe --tier full --implementation triton \
    --shape deepseek-v3-prefill-t4k-zipf --bench 'MoEForward\.time|MoEMetrics\.track_(percent|ratio_to|tflops)'
}
permute_probe() {  # permute_probe [ARGS...]: our MoE layer's permute and unpermute at DeepSeek-V3 prefill at several
  # tilings, beside torch's gather (tools/probe_permute.py)
  step probe-permute 150 python3 tools/probe_permute.py "$@"
}
expert_overlap() {  # expert_overlap [BRANCH]: our expert GEMMs at DeepSeek-V3 prefill split by load, hot and cold
  # experts apart and at once (issue 17's 65% of roofline: one after another they read at most 58.2%,
  # tools/moe_expert_bound.py); on the expert-split branch also the layer's own split at five shares
  local on=${1:-main}
  on_branch "$on" "probe-expert-overlap-$on" 240 python3 tools/probe_expert_overlap.py
}
overlap_tiles() {  # overlap_tiles NAME [ARGS...]: probe_expert_overlap.py on main with each part's own tilings
  # (--hot-gate-up, --cold-down, ...: one cold program small enough to share an SM with a hot one, session 35)
  step "probe-expert-overlap-$1" 240 python3 tools/probe_expert_overlap.py "${@:2}"
}
peak_power() {  # what the suite's peak matmul and copy draw, the idle GPU and a busy one (tools/probe_peak_power.py):
  # its last line is moe_expert_bound.py's power-floor arguments (session 35)
  step peak-power 60 python3 tools/probe_peak_power.py
}
item_cost() {  # item_cost [BRANCH]: the Gluon forward's cost per item and per key tile, fitted to full and
  # windows of 128 to 2048 keys, causal set against it (session 29: 3.8 us an item, 1.68 us a tile; the window
  # and the documents walk 8 and 5 tiles an item where causal walks 16.5)
  local on=${1:-main}
  on_branch "$on" "item-cost-$on" 120 python3 tools/probe_item_cost.py
}
item_trace() {  # item_trace [BRANCH] [VARIANT...]: the Gluon forward traced item by item, on a branch holding
  # reports/pending/item-trace.patch (default item-trace): each item's phases, waits and the fit of its period
  local on=${1:-item-trace}
  on_branch "$on" "item-trace-$on" 240 python3 tools/probe_item_trace.py "${@:2}"
}
host_issue() {  # host_issue [BRANCH] [VARIANT...]: where the host's time goes issuing our forward+backward eagerly
  # (session 30's gate logged 82% of the documents' 2.04 ms call to issue, 30% of causal's 4.39)
  local on=${1:-main}
  on_branch "$on" "host-issue-$on" 180 python3 tools/probe_host_issue.py "${@:2}"
}
default_tier() {
  step default 600 $vb run
  truth truth-default 240 bench_attention.AttentionForward.time_forward --most 6
}
bwd_gate() {  # bwd_gate BRANCH: gated against main on our attention's forward+backward at llama-3-8b-s4k
  attention_gate "$1" 420 'AttentionForwardBackward\.time' "gate-$1-fwd-bwd"
}
fwd_history() {  # fwd_history [LIMIT] [TRUTH LIMIT]: main's forward beside SDPA's (cuDNN) at llama-3-8b-s4k, re-timed apart
  step fwd "${1:-300}" $vb run --family attention --shape llama-3-8b-s4k --variant gqa_8 --variant softcap_50 \
    --variant alibi --bench 'AttentionForward\.time'
  truth truth-fwd "${2:-200}" bench_attention.AttentionForward.time_forward --most 8
}
gpu_tests() {  # gpu_tests NAME BRANCH [PYTEST ARGS]: tests/test_gpu_numerics.py compiled, on main or a branch
  local name=$1 b=$2
  shift 2
  if [ "$b" = main ]; then
    step "$name" 240 env TRITON_INTERPRET=0 VARIANTBENCH_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider \
      tests/test_gpu_numerics.py "$@"
  else
    on_branch "$b" "$name" 240 TRITON_INTERPRET=0 VARIANTBENCH_DEVICE=cuda python3 -m pytest -q \
      -p no:cacheprovider tests/test_gpu_numerics.py "$@"
  fi
}
fwd_bwd_gqa() {  # main's forward+backward at gqa_8 beside SDPA's (cuDNN; Flex is the full tier's), asv, re-timed apart
  step fwd-bwd-gqa_8 240 $vb run --family attention --shape llama-3-8b-s4k --variant gqa_8 \
    --bench 'AttentionForwardBackward\.time'
  truth truth-fwd-bwd 150 bench_attention.AttentionForwardBackward.time_forward_backward --most 3
}
bwd_probe_branch() {  # bwd_probe_branch BRANCH VARIANT: the branch's forward+backward, profiled kernel by kernel
  on_branch "$1" "bwd-$1-$2" 150 python3 tools/probe_attention_backward.py "$2" --no-sweep
}
numerics() {  # numerics BRANCH: the GPU tests (float64 references at head dim 128, CUDA graphs) on a checkout
  gpu_tests "gpu-tests-$1" "$1"
}
gluon_probe() {  # gluon_probe BRANCH [VARIANT...]: the Gluon forward beside our Triton forward and cuDNN (do_bench)
  # (the log named by its first variant too: a second probe of one branch in a lease kept only its own)
  on_branch "$1" "gluon-probe-$1${2:+-$2}" 120 python3 tools/probe_gluon_forward.py "${@:2}"
}
probed="causal softcap_50 alibi sliding_window_1024 document"  # the forwards a probe round times (sessions 25-26)
fwd_round() {  # fwd_round BRANCH: a forward branch's Gluon GPU tests, then only where they pass its probe
  gpu_tests "gluon-tests-$1" "$1" -k gluon || { echo "== $1: wrong or not run; no probe"; return 1; }
  gluon_probe "$1" $probed
}
fwd_gate() {  # fwd_gate BRANCH: gated against main on our attention's forward at llama-3-8b-s4k
  attention_gate "$1" 420 'AttentionForward\.time' "gate-$1"
}
bwd_round() {  # bwd_round BRANCH: a backward branch's gradients (the Gluon GPU tests), then if right its probe and gate
  gpu_tests "gluon-tests-$1" "$1" -k gluon || { echo "== $1: gradients wrong or not run; no probe, no gate"; return; }
  bwd_probe_branch "$1" gqa_8
  bwd_gate "$1"
}
ratios() {  # ratios [BRANCH]: our attention's cost per useful FLOP against the baseline's (SDPA's gqa_8) at every
  # interval variant (issue 17's first goal), on main or a branch (a branch's results stay in its checkout)
  local run="$vb"
  [ -n "${1:-}" ] && { worktree "$1" || return; run="$(within "$1") $vb"; }
  step "ratios${1:+-$1}" 300 $run run --family attention --shape llama-3-8b-s4k --implementation triton \
    --variant causal --variant gqa_8 --variant mqa --variant sliding_window_1024 --variant document \
    --variant softcap_50 --variant alibi --variant prefix_lm --variant full \
    --bench 'AttentionMetrics\.track_ratio_to_baseline'
}
ncu_forward() {  # ncu_forward BRANCH [VARIANT...]: Nsight Compute's counters of the Gluon forward, one launch a
  # variant (tools/ncu_forward.sh; session 31, the first hardware counters read in this project)
  local out="$PWD/$dest/ncu-$1"
  on_branch "$1" "ncu-$1" 420 bash tools/ncu_forward.sh "$out" "${@:2}"
}
under_main() {  # under_main NAME BRANCH_LOG MAIN_LOG PATTERN: whether the last ms figure on a PATTERN line of the
  # branch's probe log reads at least 1% under main's (both this lease's, under $root/one): a lease spends its gate
  # only then (sessions 32-33). The do_bench lines: a --graph line's fourth field from the end is its TFLOP/s.
  local ours main
  ours=$(grep -h "$4" "$2" | grep -v "(CUDA graph)" | tail -1 | awk '{print $(NF-3)}')
  main=$(grep -h "$4" "$3" | grep -v "(CUDA graph)" | tail -1 | awk '{print $(NF-3)}')
  echo "== $1: $ours ms against main's $main"
  awk -v a="$ours" -v b="$main" 'BEGIN { exit !(a != "" && b != "" && a < 0.99 * b) }'
}
faster_than_main() {  # faster_than_main BRANCH VARIANT: the branch's forward+backward probe (bwd_probe_branch)
  under_main "faster_than_main $1 $2" "$root/one/bwd-$1-$2.log" "$root/one/bwd-main-$2.log" "ours (Triton tiles"
}
fwd_faster_than_main() {  # fwd_faster_than_main BRANCH VARIANT: the branch's Gluon forward (gluon_probe's logs,
  # named by their first variant)
  under_main "fwd_faster_than_main $1 $2" "$root/one/gluon-probe-$1-$2.log" "$root/one/gluon-probe-main-$2.log" \
    "^  $2 *gluon "
}
fwd_gate_fastest() {  # fwd_gate_fastest VARIANT BRANCH...: of the branches whose forward probes (gluon_probe, each
  # with VARIANT first) read at least 1% under main's, gate the fastest; none gated otherwise
  local v=$1 best="" best_ms="" b ms
  shift
  for b in "$@"; do
    if fwd_faster_than_main "$b" "$v"; then
      ms=$(grep -h "^  $v *gluon " "$root/one/gluon-probe-$b-$v.log" | tail -1 | awk '{print $(NF-3)}')
      if [ -z "$best" ] || awk -v a="$ms" -v b="$best_ms" 'BEGIN { exit !(a < b) }'; then best=$b best_ms=$ms; fi
    fi
  done
  [ -n "$best" ] && echo "== fwd_gate_fastest $v: $best ($best_ms ms)" && fwd_gate "$best"
}
document_peers() {  # document_peers [BRANCH]: the document mask through SDPA's ragged (nested) backends beside ours
  if [ -n "${1:-}" ]; then on_branch "$1" "document-peers-$1" 200 python3 tools/probe_document_peers.py
  else step document-peers 200 python3 tools/probe_document_peers.py; fi
}
softcap_fold() {  # softcap_fold [SEEDS]: the bounded softcap's folded error on the GPU, seed by seed (session 34)
  step softcap-fold 200 python3 tools/probe_softcap_fold.py "${1:-8}"
}
dsa_tests() {  # dsa_tests BRANCH: DSA's GPU tests (the Gluon forward's selection against float64, its gradients)
  on_branch "$1" "dsa-tests-$1" 200 TRITON_INTERPRET=0 VARIANTBENCH_DEVICE=cuda python3 -m pytest -q \
    -p no:cacheprovider tests/test_gluon_selection.py tests/test_gpu_numerics.py -k "dsa or selection"
}
dsa_probe() {  # dsa_probe BRANCH SHAPE [ARGS...]: tools/probe_dsa.py on a branch (each masked kernel, the gather)
  on_branch "$1" "dsa-probe-$1-$2" 240 python3 tools/probe_dsa.py --shape "$2" "${@:3}"
}
words_probe() {  # words_probe BRANCH SHAPE [--keys]: DSA's selection packed into words by a branch's code
  # (tools/probe_selection_words.py, this checkout's, run from the branch's: its peak memory, time and a check)
  on_branch "$1" "words-$1-$2${3:+-keys}" 150 python3 "$PWD/tools/probe_selection_words.py" --shape "$2" "${@:3}"
}
dsa_gate() {  # dsa_gate BRANCH LIMIT BENCH SHAPE...: our DSA gated against main, beside causal and gqa_8 (the full
  # tier's shapes: s16k and longer are not the default's); BENCH 'AttentionForward\.time' or a forward+backward's
  local head shapes=()
  head=$(branch "$1") || { echo "== $1: no such branch carried"; return; }
  for s in "${@:4}"; do shapes+=(--shape "$s"); done
  step "gate-$1" "$2" $vb gate "$(git rev-parse HEAD)" "$head" --factor 1.05 --family attention --tier full \
    --implementation triton --variant dsa_topk_2048 --variant gqa_8 --variant causal "${shapes[@]}" \
    --bench "$3" --results "/tmp/gate-$1" --summary "reports/gate/$1-h200.md"
  tar czf "$root/gate-$1.tgz" -C /tmp "gate-$1"
}
