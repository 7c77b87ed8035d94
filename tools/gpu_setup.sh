# Source at the start of a lent-GPU run (device tool; carry .whl and .vbgit.bundle):
#   source tools/gpu_setup.sh && step quick 200 vb run --quick && step check 300 vb check --tier full
# Sets up asv from the carried wheels, restores git history, installs the project, and defines
# `step NAME SECONDS COMMAND...`: runs COMMAND under a time limit, keeps its full log in $OUT/NAME.log,
# prints its summary lines and wall time, and packs reports/results into $OUT after every step, so a
# later step running out of time loses nothing already measured.
source tools/gpu-env.sh || return 2
# The device receives the working tree without git history; asv needs the commit. Carry a bundle
# (git bundle create .vbgit.bundle main) and restore .git from it.
if [ -f .vbgit.bundle ]; then
  rm -rf .git /tmp/vbgit && git clone -q -b main --no-checkout .vbgit.bundle /tmp/vbgit && mv /tmp/vbgit/.git .git && git reset -q
fi
git log --oneline -1 || return 2
# asv starts benchmarks without our PYTHONPATH: install the project itself (no downloads there).
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || return 2
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
vb() { python3 -m variantbench "$@"; }
step() {
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local code=$?
  grep -vE "\] ok |skip |ready in |prepared and checked in |[Ww]arn|^ *$" "$OUT/$name.log" | tail -n 70
  echo "== step $name: exit $code in $((SECONDS - t0))s (limit ${limit}s)"
  tar czf "$OUT/results.tgz" reports/results
  return 0
}
