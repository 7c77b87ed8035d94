# Issue 17 in session 33, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s33_lanes.sh STEPS SECONDS' && await lanes 520
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 290 (never `workdir` again)
# Keep a step list on one line (a newline in it splits the steps).
set -u
root=reports/truth/s33-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # vb, branch, worktree, ... gpu_tests, gluon_probe, probed, fwd_gate, bwd_gate, host_issue
under_main() {  # under_main NAME BRANCH_LOG MAIN_LOG PATTERN: whether the last ms figure on a PATTERN line of the
  # branch's probe log reads at least 1% under main's (both this lease's): the lease spends its gate only then
  local ours main
  ours=$(grep -h "$4" "$2" | tail -1 | awk '{print $(NF-3)}')
  main=$(grep -h "$4" "$3" | tail -1 | awk '{print $(NF-3)}')
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
first="ratios"
lane one 0 "${2:-900}" "${1:-$first}"
cat "$root/one.log"
