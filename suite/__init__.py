"""asv benchmark suite.

asv imports this package by path and leaves sys.path alone, so `import variantbench` inside a
benchmark would find whichever copy is installed, possibly another checkout's. Putting this
checkout's root first makes `asv run` measure the variantbench, kernels and reference beside it.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
