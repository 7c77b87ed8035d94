"""Device facts: which device to run on, the machine's identity, and its measured peaks."""

import functools
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Callable, NamedTuple


class NoDevice(Exception):
    """The device asked for is not here (for example --device cuda on a machine with no GPU)."""


def default_device() -> str:
    """"cuda" where a GPU is visible, else "cpu"; VARIANTBENCH_DEVICE overrides.

    Reads /dev/nvidiactl rather than asking torch: asv imports the suite in a process that later forks
    the benchmarks, and initialising CUDA before a fork breaks CUDA in every child.
    """
    forced = os.environ.get("VARIANTBENCH_DEVICE")
    if forced:
        if forced not in ("cpu", "cuda"):
            raise NoDevice(f"VARIANTBENCH_DEVICE={forced!r}: expected cpu or cuda")
        return forced
    return "cuda" if os.path.exists("/dev/nvidiactl") else "cpu"


def require(device: str):
    """The device, where it is here; also the collectives' ranks where VARIANTBENCH_RANKS names a world
    (kernels/comms/ranks.py): a bad name, or one no rank answers, is one line before any case."""
    import torch

    from kernels.comms.ranks import BadRanks, served

    if device == "cuda" and not torch.cuda.is_available():
        raise NoDevice("no CUDA GPU is visible (torch.cuda.is_available() is False); use --device cpu")
    try:
        served()
    except BadRanks as why:
        raise NoDevice(str(why)) from None
    return torch.device(device)


def identity(device: str) -> dict:
    """What makes two results comparable: the GPU (or CPU) model, driver, CUDA, cuDNN, NCCL, torch
    and triton. cuDNN is what torch loads (its SDPA backend; a CPU build reports "none"); NCCL counts
    on CUDA only (the collectives' figures)."""
    import torch

    cudnn = torch.backends.cudnn.version()  # e.g. 91002 for 9.10.2; None where torch has no cuDNN
    facts = {
        "device": device,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "python": platform.python_version(),
        "cudnn": "none" if cudnn is None else str(cudnn),
    }
    if device == "cuda":
        facts["gpu"] = torch.cuda.get_device_name()
        facts["cuda"] = torch.version.cuda or "none"
        facts["driver"] = _nvidia_driver()
        facts["gpu_count"] = torch.cuda.device_count()
        facts["nccl"] = _nccl_version(torch)
    else:
        facts["gpu"] = "none"
        facts["cpu"] = platform.processor() or platform.machine()
        facts["cuda"] = "none"
        facts["driver"] = "none"
        facts["nccl"] = "none"
    return {**facts, **served_facts(device)}


def served_facts(device: str) -> dict:
    """Where the collectives' ranks come through torchrun (VARIANTBENCH_RANKS): the nodes and ranks per
    node, in node order (one rank per GPU on CUDA, rank 0's counted on its node), and on CUDA the world
    as gpu_count. Nothing otherwise: a single machine's identity is what it always was."""
    from kernels.comms.ranks import served

    world = served()
    if world is None:
        return {}
    per_node = world.per_node()
    facts = {"nodes": len(per_node), "ranks_per_node": ",".join(map(str, per_node))}
    if device == "cuda":
        facts["gpu_count"] = world.ranks
    return facts


def _nccl_version(torch) -> str:
    """"2.28.9" (a suffix such as "+cuda13.0" kept); "none" for a torch built without NCCL, which
    has no torch._C._nccl_version (torch.cuda.nccl.version() raises AttributeError there)."""
    if not hasattr(torch._C, "_nccl_version"):
        return "none"
    major, minor, patch, *suffix = torch.cuda.nccl.version()
    return f"{major}.{minor}.{patch}" + "".join(suffix)


def machine_name(facts: dict) -> str:
    """asv machine name: the device model, slugged, and the GPU count where there are several
    (`nvidia-h100-80gb-hbm3`, `nvidia-h200-x2`, `cpu-x86-64`): a collective's figures depend on how
    many GPUs take part, so two H200s and four are different machines in the history. Ranks on
    several nodes (torchrun) are nodes x ranks per node (`nvidia-h200-2x2`; `-nodes-2-4` where the
    nodes differ): the links between nodes are not those inside one.
    Software versions live in the machine's params; the gate refuses to compare across them."""
    model = facts["gpu"] if facts["device"] == "cuda" else f"cpu-{facts['cpu']}"
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    if int(facts.get("nodes", 1)) > 1:
        per_node = str(facts["ranks_per_node"]).split(",")
        return slug + (f"-{len(per_node)}x{per_node[0]}" if len(set(per_node)) == 1 else "-nodes-" + "-".join(per_node))
    count = int(facts.get("gpu_count", 1)) if facts["device"] == "cuda" else 1
    return slug + (f"-x{count}" if count > 1 else "")


@functools.cache
def compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the first visible GPU, from nvidia-smi; None where none answers. Not from torch:
    asking it initialises CUDA, which breaks CUDA in every process forked later (`default_device`)."""
    # nvidia-smi numbers GPUs in PCI order, CUDA fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID: the
    # same GPU on the machines this runs on, which hold one model each.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    query = ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"]
    query += ["-i", visible] if visible.isdigit() else []
    try:
        answer = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.split()[0]
        major, _, minor = answer.partition(".")
        return int(major), int(minor or 0)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def release(version: str) -> tuple[int, ...]:
    """A version as numbers ("3.6.0" -> (3, 6, 0); "3.7.0+git1a2b" -> (3, 7, 0)); () for "none"."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def _version(package):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "none"


def _nvidia_driver():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        return out.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _cache_path(facts):
    key = re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(str(facts[k]) for k in ("gpu", "driver", "torch", "cuda")))
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "variantbench"
    return root / f"peaks-{facts['device']}-{key}.json"


def multiprocessors(device) -> int:
    """SMs of a torch CUDA device, which split-K and flash-decoding plans fill; 4 for any other (the
    Triton interpreter's runs on the CPU, where a plan only has to exercise several splits)."""
    if device.type != "cuda":
        return 4
    import torch

    return torch.cuda.get_device_properties(device).multi_processor_count


class PeakCalls(NamedTuple):
    """The calls `measured_peaks` times, their tensors made, and their work: FLOPs, bytes read + written."""

    matmul: Callable
    flops: int
    copy: Callable
    nbytes: int
    name: str  # the matmul's size and dtype


def peak_calls(device: str) -> PeakCalls:
    """GPU: a bf16 8192^3 matmul and a 2 GiB device copy; CPU: a float32 1024^3 matmul and a 256 MiB copy.
    tools/probe_peak_power.py reads what they draw."""
    import torch

    dev = require(device)
    gen = torch.Generator().manual_seed(0)
    if device == "cuda":
        n, dtype, copy_elems = 8192, torch.bfloat16, 2**30
    else:
        n, dtype, copy_elems = 1024, torch.float32, 2**26
    a = torch.randn(n, n, generator=gen).to(dev, dtype)
    b = torch.randn(n, n, generator=gen).to(dev, dtype)
    src = torch.randn(copy_elems // 4, generator=gen).to(dev, dtype).repeat(4)
    dst = torch.empty_like(src)
    return PeakCalls(lambda: a @ b, 2 * n**3, lambda: dst.copy_(src), 2 * src.numel() * src.element_size(),
                     f"{n}^3 {dtype}")


def measured_peaks(device: str) -> dict:
    """{"tflops": dense matmul rate, "gbps": copy bandwidth} measured on this device, cached per
    identity: `peak_calls`' matmul and copy. "% of peak" in the suite is against these, not datasheets."""
    facts = identity(device)
    path = _cache_path(facts)
    if path.exists():
        return json.loads(path.read_text())
    from variantbench.timing import median_ms

    calls, dev = peak_calls(device), require(device)
    peaks = {
        "tflops": calls.flops / median_ms(calls.matmul, dev) / 1e9,
        "gbps": calls.nbytes / median_ms(calls.copy, dev) / 1e6,
        "matmul": calls.name,
        **facts,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(peaks, indent=1))
    tmp.replace(path)
    return peaks
