# Issue 17 in session 44, on one nvidia-h200:
#   git bundle create .vbgit.bundle main BRANCH...   (the branches the lease's steps name)
#   run(kind="nvidia-h200", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; \
#     source tools/gpu_detached.sh && workdir && detach lanes 'bash tools/s44_lanes.sh STEPS SECONDS' && await lanes 520
#   a later call, while the lane runs: source tools/gpu_detached.sh && await lanes 290 (never `workdir` again)
# Keep a step list on one line (a newline in it splits the steps).
exec bash tools/session_lanes.sh s44 "$@"
