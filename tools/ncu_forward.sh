# tools/ncu_forward.sh OUT VARIANT...: Nsight Compute's counters of one Gluon forward launch per variant
# (tools/probe_ncu.py), each report exported as pages under OUT/VARIANT (raw metrics, details, SASS with
# warp stall samples), then the summary side by side. Run from the checkout whose kernels it reads.
set -u
out=$1
shift
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -1)
[ -n "$ncu" ] || { echo "ncu_forward: no ncu on PATH or under /opt/nvidia/nsight-compute"; exit 2; }
"$ncu" --version | tail -1
for variant in "$@"; do
  mkdir -p "$out/$variant"
  rep="$out/$variant/forward"
  "$ncu" --profile-from-start off --clock-control none --set full --import-source no \
    -k regex:_attention_forward -f -o "$rep" \
    python3 tools/probe_ncu.py "$variant" 2>&1 | grep -v "^==PROF== Profiling\|^==PROF== Disconnected" | tail -5
  [ -f "$rep.ncu-rep" ] || { echo "ncu_forward: no report for $variant"; continue; }
  "$ncu" --import "$rep.ncu-rep" --page raw --csv > "$out/$variant/raw.csv" 2> "$out/$variant/raw.err"
  "$ncu" --import "$rep.ncu-rep" --page details --csv > "$out/$variant/details.csv" 2> "$out/$variant/details.err"
  "$ncu" --import "$rep.ncu-rep" --page source --print-source sass --csv > "$out/$variant/source.csv" \
    2> "$out/$variant/source.err"
  ls -la "$out/$variant" | awk '{print "  " $5, $9}'
  # the report itself stays only if small (the exported pages carry what the summary reads)
  [ "$(stat -c %s "$rep.ncu-rep")" -lt 20000000 ] || rm -f "$rep.ncu-rep"
done
python3 tools/probe_ncu.py --summary "$out"
