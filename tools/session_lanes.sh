# One lease's steps on one GPU, logs under reports/truth/TAG-<commit>/ (the per-session scripts, from s32 on, call
# it with their session's tag; before that each carried these lines itself):
#   bash tools/session_lanes.sh TAG 'STEPS' [SECONDS]     (STEPS: lanes.sh's functions, on one line; default ratios)
set -u
if [ $# -lt 1 ] || [ -z "$1" ]; then
  echo "session_lanes.sh: give the session's tag first (e.g. s34), then 'STEPS' [SECONDS]" >&2
  exit 2
fi
root=reports/truth/$1-$(git rev-parse --short HEAD)
show='MISMATCH|Mismatch|ERROR|error|asv finished|Traceback|^verdict|fastest|TFLOP/s|slower|faster|regress'
show+='| ms |passed|failed|skip|diff|x baseline'
mkdir -p "$root"
source tools/lanes.sh  # the steps: gpu_tests, gluon_probe, fwd_gate, bwd_gate, under_main, fwd_gate_fastest, ...
lane one 0 "${3:-900}" "${2:-ratios}"
cat "$root/one.log"
