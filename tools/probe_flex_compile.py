"""Where a FlexAttention case's setup time goes, in a fresh process: interpreter and CUDA start, then
prepare (compile), with Inductor's cache counters. Run it twice to see a warm cache:
    python3 tools/probe_flex_compile.py gqa_8
On an H100 host (a9b07b9): start 7-10 s, prepare 7.3 s cold / 4.6 s with FX graph and AOT autograd
cache hits; TORCHINDUCTOR_COMPILE_THREADS=1 changed nothing (4.5 s).
"""

import time, sys, os
t0 = time.perf_counter()
import torch
from variantbench import cases
from torch._dynamo.utils import counters
case = cases.resolve("attention", sys.argv[1], "flex", "llama-3-8b-s4k", "cuda")
torch.zeros(1, device="cuda")
t1 = time.perf_counter()
from variantbench.catalog import attention as A
p = A.make_problem(case.variant, case.shape, device=torch.device("cuda"), dtype=torch.bfloat16, seed=0)
t2 = time.perf_counter()
call = case.implementation.load().prepare(case.variant, p)
torch.cuda.synchronize(); t3 = time.perf_counter()
print(f"{sys.argv[1]} threads={os.environ.get('TORCHINDUCTOR_COMPILE_THREADS')}: init {t1-t0:.1f}s problem {t2-t1:.1f}s prepare {t3-t2:.1f}s", dict(counters["inductor"]), dict(counters["aot_autograd"]))
