# Session 11's last device minutes (~270 s on nvidia-h200-x4): issue 18's 2 "nodes" x 2 GPUs run of
# the collectives at 64 MiB beside one 4-rank run, after the fix that stopped the suite capturing a
# one-repeat collective (86c9ee3's two-node run hung there). The check at 86c9ee3 passed (24 cases).
# Logs straight into $OUT and the results packed every 15 s, so the device budget's end loses nothing.
#   run(kind="nvidia-h200-x4", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; bash tools/s11_nodes.sh
(while sleep 15; do tar czf "$OUT/results.tmp.tgz" reports/results && mv "$OUT/results.tmp.tgz" "$OUT/results.tgz"; done) &
bash tools/torchrun_nodes.sh "$OUT/nodes" comms-64m
tar czf "$OUT/results.tgz" reports/results
