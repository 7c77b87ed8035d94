# Issue 17 in session 32, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s32_lanes.sh STEPS SECONDS' && await lanes 520
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 290 (never `workdir` again)
# Keep a step list on one line (a newline in it splits the steps).
set -u
root=reports/truth/s32-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_gate, bwd_gate, host_issue
faster_than_main() {  # faster_than_main BRANCH VARIANT: whether the branch's forward+backward probe (bwd_probe_branch,
  # this lease) read at least 1% under main's: the lease spends its gate only then
  local ours main
  ours=$(grep -h "ours (Triton tiles" "$root/one/bwd-$1-$2.log" | awk '{print $(NF-3)}')
  main=$(grep -h "ours (Triton tiles" "$root/one/bwd-main-$2.log" | awk '{print $(NF-3)}')
  echo "== faster_than_main $1 $2: $ours ms against main's $main"
  awk -v a="$ours" -v b="$main" 'BEGIN { exit !(a != "" && b != "" && a < 0.99 * b) }'
}
fwd_faster_than_main() {  # fwd_faster_than_main BRANCH VARIANT: whether the branch's Gluon forward read at least 1%
  # under main's in this lease's last gluon_probe of each (logs named by their first variant)
  local ours main
  ours=$(grep -h "^  $2 *gluon " "$root/one/gluon-probe-$1-$2.log" | tail -1 | awk '{print $(NF-3)}')
  main=$(grep -h "^  $2 *gluon " "$root/one/gluon-probe-main-$2.log" | tail -1 | awk '{print $(NF-3)}')
  echo "== fwd_faster_than_main $1 $2: $ours ms against main's $main"
  awk -v a="$ours" -v b="$main" 'BEGIN { exit !(a != "" && b != "" && a < 0.99 * b) }'
}
first="ratios"
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
