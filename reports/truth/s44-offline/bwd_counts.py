"""Every SASS opcode count of each Gluon backward kernel and case (compile_gluon_backward_sm90's), JSON on stdout."""
import json, sys
from collections import Counter
root = sys.argv[1]
sys.path.insert(0, root + "/tools"); sys.path.insert(0, root)
import compile_gluon_backward_sm90 as c, sm90_cubin
out = {}
for name in c.KERNELS:
    kernel = getattr(c.KERNELS[name][0], name)
    for case, switches in c.CASES.items():
        if "BOUNDED" in switches or ("SELECTION" in switches and "SELECTION" not in kernel.arg_names):
            continue
        b = c.compiled(name, switches)
        out[f"{name} {case}"] = Counter(op.split(".")[0] for op in sm90_cubin.listing_opcodes(sm90_cubin.sass_listing(b.asm["cubin"])))
print(json.dumps(out))
