"""The suite imports torch and triton in asv's forkserver, once, rather than in every forked benchmark
(suite/common.py `_preload`), and nothing that starts CUDA: not our kernel modules, whose autotune
decorators start triton's CUDA driver on import in triton 3.2-3.6."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_suite_preloads_torch_and_triton_and_none_of_our_kernels():
    code = (
        "import json, sys\n"
        "import suite.bench_attention, suite.bench_mla, suite.bench_moe, suite.bench_linear, suite.bench_block\n"
        "import torch\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'triton': 'triton' in sys.modules,"
        " 'kernels': sorted(m for m in sys.modules if m.startswith('kernels.')),"
        " 'cuda': torch.cuda.is_initialized()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "VARIANTBENCH_DEVICE": "cpu"})
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["torch"] and seen["triton"]
    assert seen["kernels"] == [] and seen["cuda"] is False
