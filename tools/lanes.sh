# Sourced by the lease scripts that run steps in lanes (tools/s16_lanes.sh to tools/s18_lanes.sh), after
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
