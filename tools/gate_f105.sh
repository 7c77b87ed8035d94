# Issue 12's last demonstration: a ~6% slowdown planted on a branch, caught at regression_factor 1.05
# by a measuring gate and named alone. On one GPU (nvidia-h200), after tools/gpu_setup.sh; the bundle
# carries the branches: git bundle create .vbgit.bundle main aa-h200 planted-h200-6pct
#   source tools/gpu_setup.sh && source tools/gpu_detached.sh && workdir && detach f105 'bash tools/gate_f105.sh' && await f105 560
# 431e9f2 (recorded in session 7, the A/A gate's head) against 3e298a6 (branch planted-h200-6pct: 0.625
# extra passes over the causal Triton kernel's output), over the whole attention forward grid at the
# headline shape (27 benchmarks; the default tier's 49 took 625 s to measure, these about 330 s), then
# the confirming re-runs of the suspects on both commits. The A/A at 1.05 passed in session 8
# (reports/gate/aa-5bd47a9-431e9f2-h200-measured-f105.md). Gate results go to reports/gate/results-f105/
# (demonstrations stay out of main's history), the summary to reports/gate/.
set -u
results=reports/gate/results-f105
mkdir -p "$results/nvidia-h200"
cp reports/gate/results/nvidia-h200/431e9f24-*.json reports/results/nvidia-h200/machine.json "$results/nvidia-h200/"
t0=$SECONDS
python3 -m variantbench gate 431e9f2 3e298a6 --factor 1.05 --results "$results" --machine nvidia-h200 \
  --bench 'AttentionForward\.time_forward' --summary reports/gate/planted-431e9f2-3e298a6-h200-f105-forward.md
echo "== gate planted-431e9f2-3e298a6-h200-f105-forward: exit $? in $((SECONDS - t0))s"
