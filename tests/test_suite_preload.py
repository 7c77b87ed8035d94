"""The suite imports torch and its grid's implementation modules in asv's forkserver, once, rather than
in every forked benchmark (suite/common.py `_preload`), and initialises no CUDA doing it."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_grid_preloads_its_implementations_without_cuda():
    code = (
        "import json, sys\n"
        "from suite.common import grid\n"
        "params, _ = grid('attention')\n"
        "import torch\n"
        "print(json.dumps({'implementations': params[1], 'loaded': sorted(m for m in sys.modules"
        " if m.startswith('kernels.attention.')), 'cuda': torch.cuda.is_initialized()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "VARIANTBENCH_DEVICE": "cpu"})
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    from variantbench.catalog import family

    modules = {i.module for i in family("attention").implementations if i.name in seen["implementations"]}
    assert modules and modules <= set(seen["loaded"])
    assert seen["cuda"] is False
