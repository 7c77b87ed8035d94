# Issue 12's last demonstration, at regression_factor 1.05 on one H200 (nvidia-h200), as a detached job
# (tools/gpu_detached.sh; both gates take ~700 s together). The bundle carries the demonstration's
# branches: git bundle create .vbgit.bundle main aa-h200 planted-h200-6pct
#   source tools/gpu_setup.sh && source tools/gpu_detached.sh && workdir && detach f105 'bash tools/gate_f105.sh' && await f105 560
# 1. A/A: 5bd47a9 against 431e9f2 (an empty commit), both recorded in session 7: only suspects re-run.
# 2. The planted slowdown: 431e9f2 against 3e298a6 (branch planted-h200-6pct: 0.625 extra passes over
#    the causal Triton kernel's output, ~6%), which the gate measures, then re-runs suspects on both.
# The results of the three commits go to reports/gate/results-f105/ (gate demonstrations stay out of
# main's history); summaries to reports/gate/.
set -u
results=reports/gate/results-f105
mkdir -p "$results/nvidia-h200"
cp reports/results/nvidia-h200/5bd47a9c-*.json reports/gate/results/nvidia-h200/431e9f24-*.json \
   reports/results/nvidia-h200/machine.json "$results/nvidia-h200/"
for pair in "5bd47a9 431e9f2 aa-5bd47a9-431e9f2-h200-measured-f105" "431e9f2 3e298a6 planted-431e9f2-3e298a6-h200-f105"; do
  set -- $pair
  t0=$SECONDS
  python3 -m variantbench gate "$1" "$2" --factor 1.05 --results "$results" --machine nvidia-h200 \
    --summary "reports/gate/$3.md"
  echo "== gate $3: exit $? in $((SECONDS - t0))s"
done
