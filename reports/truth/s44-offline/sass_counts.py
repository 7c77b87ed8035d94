"""Full SASS opcode counts per case of tools/compile_gluon_sm90.py, as JSON on stdout."""
import json, sys
from collections import Counter
root = sys.argv[1]
sys.path.insert(0, root + "/tools"); sys.path.insert(0, root)
import compile_gluon_sm90 as c, sm90_cubin
out = {}
for case, switches in c.CASES.items():
    b = c.compiled(switches)
    out[case] = Counter(op.split(".")[0] for op in sm90_cubin.listing_opcodes(sm90_cubin.sass_listing(b.asm["cubin"])))
print(json.dumps(out))
