# Work that outlasts one device call (600 s): a PR gate of the default suite runs two suites.
# Source after tools/gpu_setup.sh in the first call, then alone in later calls (each within the 30 s
# the machine stays warm):
#   call 1: source tools/gpu_setup.sh && source tools/gpu_detached.sh && workdir && detach gate 'python3 -m variantbench gate A B' && await gate 560
#   call 2: source tools/gpu_detached.sh && await gate 560
#   (a new lane in a later warm call: export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH && source
#   tools/gpu_detached.sh && cd /tmp/vbwork && detach NAME '...': the first call's install, checkout and
#   worktrees are there; not gpu-env.sh again, whose pip --upgrade replaces packages a running lane imports)
# `workdir` copies the checkout to /tmp/vbwork and works there: each call re-sends the working tree,
# and gpu_setup.sh rebuilds .git, under a gate's git worktrees. `detach` starts a command in its own
# process session (setsid), which the device tool leaves running when a call returns; `await` waits
# for it up to a limit, prints its new log lines, and packs its log and results into $OUT.
DETACHED=/tmp/vb-detached
workdir() {  # refuses while a detached command runs there: re-copying would delete its logs (session 21)
  local running
  running=$(for log in "$DETACHED"/*.log; do [ -f "$log" ] && [ ! -f "${log%.log}.done" ] && echo "${log##*/}"; done)
  if [ -n "$running" ]; then
    echo "workdir: a detached command still runs in /tmp/vbwork (${running%.log}); call await alone" >&2
    return 2
  fi
  rm -rf /tmp/vbwork && cp -a . /tmp/vbwork && cd /tmp/vbwork || return 2
}
detach() {  # detach NAME 'COMMANDS': a bash script line, run in /tmp/vbwork with this shell's environment
  local name=$1 script=$2
  # a later call's shell starts without the first call's environment: a lane started there without asv
  # on its path ran its gate to "No module named 'asv'" (session 29)
  if ! command -v asv > /dev/null; then  # (the runner starts the asv executable)
    echo "detach: no asv on this shell's PATH: export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:\$PATH first" >&2
    return 2
  fi
  mkdir -p "$DETACHED"
  rm -f "$DETACHED/$name.done" "$DETACHED/$name.shown"
  setsid nohup bash -c "cd /tmp/vbwork && { $script; }; echo \$? > $DETACHED/$name.done" \
    > "$DETACHED/$name.log" 2>&1 < /dev/null &
  echo "detached $name: $script"
}
await() {
  local name=$1 limit=$2 t0=$SECONDS shown
  while [ ! -f "$DETACHED/$name.done" ] && [ $((SECONDS - t0)) -lt "$limit" ]; do sleep 5; done
  shown=$(cat "$DETACHED/$name.shown" 2>/dev/null || echo 0)
  tail -n +$((shown + 1)) "$DETACHED/$name.log" | grep -vE "\] ok |skip |ready in |prepared and checked in |[Ww]arn|^ *$" | tail -n 80
  wc -l < "$DETACHED/$name.log" > "$DETACHED/$name.shown"
  cp "$DETACHED/$name.log" "$OUT/"
  (cd /tmp/vbwork && tar czf "$OUT/results.tgz" reports)
  if [ -f "$DETACHED/$name.done" ]; then echo "== $name: exit $(cat "$DETACHED/$name.done")"; else echo "== $name: running"; fi
}
