# Gates on a GPU, one pair after another, each gate's exit and wall time printed: a demonstration's
# A/A pair and planted regression in one detached job (tools/gpu_detached.sh).
#   bash tools/gate_chain.sh BASE HEAD NAME [BASE HEAD NAME ...]   (summaries: reports/gate/NAME.md)
mkdir -p reports/gate
while [ $# -ge 3 ]; do
  base=$1 head=$2 name=$3 t0=$SECONDS
  shift 3
  python3 -m variantbench gate "$base" "$head" --summary "reports/gate/$name.md"
  echo "== gate $name ($base against $head): exit $? in $((SECONDS - t0))s"
done
