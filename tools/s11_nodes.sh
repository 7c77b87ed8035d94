# Session 11's last device minutes (~300 s on nvidia-h200-x4): issue 18's 2 "nodes" x 2 GPUs run of
# the collectives at 64 MiB beside one 4-rank run, after the fix that stopped the suite capturing a
# one-repeat collective (86c9ee3's two-node run hung there). The check at 86c9ee3 passed (24 cases).
#   run(kind="nvidia-h200-x4", carry=[".whl", ".vbgit.bundle"]): source tools/gpu_setup.sh > /tmp/setup.log 2>&1; bash tools/s11_nodes.sh
dest=reports/truth/nodes-$(git rev-parse --short HEAD)
mkdir -p "$dest"
bash tools/torchrun_nodes.sh "$dest" comms-64m
cp -r "$dest" "$OUT/" && tar czf "$OUT/results.tgz" reports/results "$dest"
