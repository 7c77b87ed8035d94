set -u
run() {  # run NAME FILE PYTHON-REPLACEMENT TESTS
  local name=$1 file=$2 old=$3 new=$4 tests=$5
  cp "$file" /tmp/sel/backup
  python - "$file" "$old" "$new" <<'PY'
import sys
p, a, b = sys.argv[1:]
s = open(p).read()
assert s.count(a) == 1, ("not found", a)
open(p, "w").write(s.replace(a, b))
PY
  if python -m pytest -q -x $tests > /tmp/sel/m.log 2>&1; then echo "SURVIVED $name"; else echo "killed $name: $(grep -m1 -E '^(FAILED|ERROR)' /tmp/sel/m.log)"; fi
  cp /tmp/sel/backup "$file"
}
S=kernels/attention/gluon_selection.py
T=tests/test_gluon_selection.py
run no-transpose $S ".view(q_len, tiles, 16, WORDS, 2).transpose(2, 3)" ".view(q_len, tiles, WORDS, 16, 2)" $T
run no-tril $S "causal = torch.tril(selection[b], diagonal=kv_len - q_len)" "causal = selection[b]" $T
run quads-swap $S "reg_bases=[[0, 0, 0, 1], [8, 0, 0, 0]," "reg_bases=[[8, 0, 0, 0], [0, 0, 0, 1]," $T
run bit-order $S "weights = (2 ** torch.arange(8, device=selection.device)).to(torch.uint8)" "weights = (2 ** torch.arange(7, -1, -1, device=selection.device)).to(torch.uint8)" $T
run no-causal-check $S "if not causal or beside:" "if beside:" $T
run no-shape-check $S "if tuple(selection.shape) != shape or selection.dtype" "if selection.dtype" $T
run old-routing kernels/attention/triton_attention.py 'if _kernel(q, k, v, config) is gluon_flash and (options.get("selection") is None or selection_words is not None):' 'if options.get("selection") is None and _kernel(q, k, v, config) is gluon_flash:' tests/test_token_sparse_backward.py
run gluon-dense-from kernels/attention/triton_token_sparse.py 'GLUON_MASKED = MaskedKernel("our Gluon forward", 0.048' 'GLUON_MASKED = MaskedKernel("our Gluon forward", 0.114' tests/test_token_sparse.py
