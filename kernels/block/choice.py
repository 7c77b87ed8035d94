"""Which implementation serves each piece of a fused block (kernels/block/fused.py): every block-serving
fused implementation of the piece's family is prepared at the piece's shape and, on CUDA, timed over
TRIAL_CALLS calls (forward, or forward and backward where the block is trained); the fastest serves.
On a CPU the first that prepares serves: a CPU's timings say nothing of a GPU's.

On one GPU the machine's first choice for a piece is kept (kernels/tuned_choices.py), and later
processes prepare that implementation alone. Every asv process of a block prepared every candidate
again, FlexAttention's compile and ours' autotuning included, only to time them against SDPA, in each
of a fused block's five or more benchmark processes (a setup took 11-38 s at prefill-b4-s4k on an
H200, session 12; a Flex compile alone ~10 s a process, session 11's MLA tracks). The choice is filed under everything it depends on: torch's and Triton's
versions, the GPU, the family, variant and piece shape, whether the block trains, the dtype, and the
source of every candidate's module. Ranks of a split block time their candidates together and sum
the times (`agree`, a collective): they keep no choice, so that no rank skips a collective the
others run.
"""

import importlib.util
import os
import sys

import torch

from kernels import tuned_choices
from variantbench import timing
from variantbench.cases import first_line
from variantbench.catalog import Unsupported, family

TRIAL_CALLS = 5


def _elapsed(step, device):
    if device.type != "cuda":
        step()  # it runs: on a CPU the first that does serves, whatever its time
        return 0.0
    return timing.per_call_ms(step, device, calls=TRIAL_CALLS)  # after an untimed call: compiles, plans


def serves(implementation, variant, shape, device, trained):
    """Why this implementation cannot be the block's piece here, or None."""
    if not hasattr(implementation.load(), "prepare_function"):
        return "serves no block"
    if implementation.needs_triton and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton runs on CUDA, or on the CPU under TRITON_INTERPRET=1"
    why = implementation.unsupported(variant, shape)
    if why:
        return why
    if trained:
        if not implementation.backward or (device.type == "cpu" and not implementation.backward_on_cpu):
            return "forward-only here"
        return implementation.backward_unsupported(variant, shape)
    return None


def remembers(device) -> bool:
    """Whether choices are kept on this device: on a GPU, where they were timed."""
    return device.type == "cuda"


def choice_path(fam, variant, shape, device, trained, dtype):
    """This machine's file for one piece's choice."""
    sources = []
    for implementation in fam.implementations:
        spec = importlib.util.find_spec(implementation.module) if implementation.fused else None
        sources.append(tuned_choices.package_hash(spec.origin) if spec and spec.origin else implementation.module)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    triton_version = getattr(sys.modules.get("triton"), "__version__", "")
    return tuned_choices.choice_path([torch.__version__, triton_version, gpu, fam.name, variant.name, repr(shape),
                                      trained, dtype, *sources])


def _timed(fam, variant, shape, problem, inputs, trained, only=None):
    """({name: (ms, function)} of the candidates that ran, {name: why} of those that did not)."""
    device = inputs[0].device
    timed, refused = {}, {}
    for implementation in fam.implementations:
        if not implementation.fused or (only is not None and implementation.name != only):
            continue
        why = serves(implementation, variant, shape, device, trained)
        if why:
            refused[implementation.name] = why
            continue

        def step(function):
            out = function(*inputs)
            if trained:
                torch.autograd.grad(out.float().sum(), [t for t in inputs if t.requires_grad])

        try:
            function = implementation.load().prepare_function(variant, problem)
            # its first call (Flex's and fla's compile) inside the try too: a head dim a kernel has no
            # tile for (ours at 256), or shared memory it does not have, refuses it here
            timed[implementation.name] = (_elapsed(lambda: step(function), device), function)
        except Exception as error:  # noqa: BLE001 - a candidate that cannot run is not chosen; the others are
            refused[implementation.name] = f"{type(error).__name__}: {first_line(error)}"
            continue
        if device.type != "cuda":
            break
    return timed, refused


def fastest_piece(family_name, variant, shape, problem, inputs, trained, agree=None):
    """(function, its implementation's name): the fastest of the family's block-serving fused
    implementations for `variant` at `shape`, timed on `inputs` (on CUDA), prepared on `problem`.
    `agree`: a split block's ranks sum their times (Split.agree), so they pick one piece; None alone,
    where the machine's choice is kept and reused."""
    fam = family(family_name)
    device = inputs[0].device
    memory = choice_path(fam, variant, shape, device, trained, inputs[0].dtype) \
        if agree is None and remembers(device) else None
    chosen = tuned_choices.recalled(memory) if memory else None
    if chosen is not None:
        timed, _ = _timed(fam, variant, shape, problem, inputs, trained, only=chosen)
        if chosen in timed:
            return timed[chosen][1], chosen
    timed, refused = _timed(fam, variant, shape, problem, inputs, trained)  # no choice yet, or it fails now
    names = [i.name for i in fam.implementations]
    summed = (agree or (lambda times: times))([timed[n][0] if n in timed else float("inf") for n in names])
    if not timed or min(summed) == float("inf"):
        raise Unsupported(f"no fused {family_name} implementation serves {variant.name} here: {refused}")
    name = names[summed.index(min(summed))]
    if memory:
        tuned_choices.keep(memory, name, {"family": family_name, "variant": variant.name, "trained": trained})
    return timed[name][1], name
