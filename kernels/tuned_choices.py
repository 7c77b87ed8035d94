"""Our kernels' tuning choices kept on disk, one per machine and tuning key, so every later process
of the machine launches what the first one chose and tunes no more.

Tuning again in every asv process let close configs win by turns: our attention kernel's asv figure
sat 8% over a do_bench median taken in another process (10b2a5e), and its figures moved 6-7% between
two H100s, a regression gate's false alarm in the making. A choice is filed under everything it
depends on (the caller names it: Triton's version, the GPU, the kernel module's source, the dtype, the
key's values), next to Triton's own cache.
"""

import hashlib
import json
import os
from pathlib import Path

CHOICES_DIR = Path(os.environ.get("TRITON_CACHE_DIR", Path.home() / ".triton" / "cache")) / "variantbench-autotune"


def source_hash(module_file) -> str:
    """A kernel module's source, whose every config and kernel a choice depends on."""
    return hashlib.sha256(Path(module_file).read_bytes()).hexdigest()


def package_hash(module_file) -> str:
    """Every module beside a kernel module, in name order: an implementation's kernels need not all be in
    the file the catalog names (the triton MoE layer's expert GEMMs are in triton_experts.py, beside
    triton_moe.py), and a choice kept across a change to one of them would time the old choice's
    winner for both commits of a gate."""
    digest = hashlib.sha256()
    for path in sorted(Path(module_file).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def choice_path(identity) -> Path:
    """This machine's file for one choice: `identity`, the strings it depends on."""
    return CHOICES_DIR / f"{hashlib.sha256('|'.join(map(str, identity)).encode()).hexdigest()[:32]}.json"


def recalled(path: Path) -> str | None:
    """The name of the config chosen before under this path, or None."""
    try:
        return json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def keep(path: Path, name: str, key: dict):
    """File a choice, unless one is filed already (the first stays); atomically, as parallel check
    workers tune at once."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"config": name, "key": {k: str(v) for k, v in key.items()}}))
    os.replace(tmp, path)
