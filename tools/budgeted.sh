# Sourced by the GPU job scripts: `step NAME LIMIT COMMAND...` runs one command under `timeout LIMIT`,
# its log in $dest/NAME.log, and prints its exit code, its seconds and the log's lines matching $show.
# A step that would start past $budget seconds of the job is skipped, and says so, so a job fits what
# is left of a device session; one that starts is cut at the budget (a run keeps each timed benchmark
# it finished: variantbench.asvrun.run_staged publishes after each).
# It returns the command's exit code (a skipped step returns 3), so a lane can stop where a step failed.
# A step whose name an earlier one of the job took moves that log to NAME.log.1 (then .2, ...) first: the
# latest is NAME.log, and none is overwritten (session 33 lost two probes' figures to a repeated name).
# The script sets dest, budget and show before its first step.
step() {
  local name=$1 limit=$2 t0=$SECONDS kept=1
  shift 2
  if [ $((SECONDS + limit / 2)) -gt "$budget" ]; then echo "== $name: skipped (${SECONDS}s of ${budget}s used)"; return 3; fi
  [ $((SECONDS + limit)) -gt "$budget" ] && limit=$((budget - SECONDS))
  if [ -e "$dest/$name.log" ]; then
    while [ -e "$dest/$name.log.$kept" ]; do kept=$((kept + 1)); done
    mv "$dest/$name.log" "$dest/$name.log.$kept"
  fi
  timeout "$limit" "$@" > "$dest/$name.log" 2>&1
  local code=$?
  echo "== $name: exit $code in $((SECONDS - t0))s"
  grep -E "$show" "$dest/$name.log" | tail -n 16
  return $code
}
