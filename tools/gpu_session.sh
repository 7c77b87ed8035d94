#!/usr/bin/env bash
# One lent-GPU session: set up asv from carried wheels, check, run, prove the timer, pack results.
# Usage (device tool, carry .whl): bash tools/gpu_session.sh [variantbench run options]
set -uo pipefail
source tools/gpu-env.sh || exit 2
# The device receives the working tree without git history; asv needs the commit. Carry a bundle
# (git bundle create .vbgit.bundle main) and restore .git from it.
if [ -f .vbgit.bundle ]; then
  rm -rf .git && rm -rf /tmp/vbgit && git clone -q -b main --no-checkout .vbgit.bundle /tmp/vbgit && mv /tmp/vbgit/.git .git && git reset -q
fi
git log --oneline -1 || exit 2
# asv starts benchmarks without our PYTHONPATH: install the project itself (no downloads there).
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 2
vb() { python3 -m variantbench "$@"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv
t0=$SECONDS
vb run "$@" 2>&1 | tee "$OUT/run.log" | grep -E "^\[|asv finished|machine |measured|forward|^ +[a-z0-9_-]+ +[a-z]" | tail -n 80
echo "run: $((SECONDS - t0))s"
python3 tools/timing_truth.py 2>&1 | grep -v Warn | tail -5
tar czf "$OUT/results.tgz" reports/results
