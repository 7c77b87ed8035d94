"""The catalog: every family's variants, implementations, baseline and shapes, as plain data.

One module per family (`attention.py`, ...) holds its entries; this module holds the types they share
and the tuple of families. Kernel code is named by module path, never imported here, so
`variantbench list` needs neither a GPU nor Triton; an entry's router or collective name is checked
against reference/'s table of them (torch only) when the entry is made.
"""

import dataclasses
import importlib
import re
from dataclasses import dataclass
from typing import Callable


class Unsupported(Exception):
    """This (variant, implementation, shape, device) combination cannot run; the message says why.

    The suite turns it into an asv skip (NotImplementedError); the CLI prints it as a reason.
    """


def lookup(table: dict, name: str, what: str):
    """table[name]; an unknown name raises ValueError naming it and every known one (STYLE 13: an
    unknown router once ran DeepSeek's silently, and `check` passed it)."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(table)}") from None


def check_numbers_in_name(entry, fields_by_part: dict[str, str]):
    """Raise ValueError unless every number in `entry.name` equals the field it stands for.

    A number is a `_`-separated token of the name; the name part just before it says which field:
    with {"window": "window"}, `sliding_window_1024` needs window == 1024. A number after no part of
    `fields_by_part` is refused too. History is kept by name, so a name that says one thing while the
    fields do another (`sliding_window_4096` with window=1024) would file one variant's timings under
    another's name.
    """
    kind = type(entry).__name__
    tokens = entry.name.split("_")
    known = ", ".join(f"{part}_N for {field}" for part, field in fields_by_part.items()) or "none"
    for i, token in enumerate(tokens):
        if not re.fullmatch(r"\d+(\.\d+)?", token):
            continue
        parts = [p for p in fields_by_part if tokens[:i][-len(p.split("_")):] == p.split("_")]
        if not parts:
            raise ValueError(f"{kind} {entry.name!r}: the number {token} in its name stands for no field "
                             f"(numbers its name may carry: {known})")
        part = max(parts, key=len)
        field = fields_by_part[part]
        value = getattr(entry, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != float(token):
            raise ValueError(f"{kind} {entry.name!r}: {part}_{token} in its name means {field}={token}, but "
                             f"{field}={value!r}")


@dataclass(frozen=True)
class NamedVariant:
    """A variant that is its name and its family's math alone (the shape's model gives every number):
    each such family subclasses it, so a plug-in's entry names its family by its type."""

    name: str
    baseline: bool = False
    note: str = ""

    def __post_init__(self):
        check_numbers_in_name(self, {})

    def unsupported(self, shape) -> str | None:
        return None


@dataclass(frozen=True)
class Implementation:
    """One way to compute a family's variants.

    `module` provides `prepare(variant, problem) -> Callable[[], Tensor]`: all compilation and
    autotuning happens in prepare, the returned call only launches work.
    `unsupported(variant, shape)` returns why this implementation cannot run that variant at that
    shape, or None. `autotunes`: its prepare times candidate configs on the GPU, so it is prepared
    with no other work on the device (see variantbench.check_workers.check_many). `every_gpu`: a case runs one
    process on each GPU of the machine (a collective's ranks), so cases are checked one at a time.
    """

    name: str
    module: str
    fused: bool
    backward: bool
    backward_on_cpu: bool = True  # False where the library has a backward on CUDA only
    unsupported: Callable[[object, object], str | None] = lambda variant, shape: None
    # why an implementation with a backward has none for this variant (its block-sparse kernel is forward-only)
    backward_unsupported: Callable[[object, object], str | None] = lambda variant, shape: None
    needs_triton: bool = False
    autotunes: bool = False
    every_gpu: bool = False
    ours: bool = False  # our own kernel, the one under development: `run --quick` times it and the baseline
    # The lowest tier (variantbench.shapes.TIERS) whose runs include it unless named: `compiled`
    # compiles in every asv process (10-30 s each), which the default tier's 10 minutes cannot hold.
    tier: str = "quick"

    @property
    def runs_alone(self) -> bool:
        """Checked with no other case beside it (see `autotunes` and `every_gpu`)."""
        return self.autotunes or self.every_gpu

    def load(self):
        return importlib.import_module(self.module)


@dataclass(frozen=True)
class Family:
    """A family's catalog entries and the three functions the harness needs from it:

    make_problem(variant, shape, *, device, dtype, seed, requires_grad=False) -> problem: seeded random
        inputs (never zeros); a problem has `seed`, `device`, `inputs()` (name -> tensor, refilled in
        place between check and timing) and, for families with a backward, `grad_inputs()` (tensors held
        by its fields or its sub-problems', whose names name their gradients: `field_names`);
    check_views(variant, problem, out, rows) -> (reference(dtype) -> Tensor, got, rows compared): what to
        compare against the reference, the reference evaluated in a given dtype on the same rows;
    work(variant, problem, backward=False) -> (FLOPs, bytes) of useful work.

    And where a case's own shape is too large to check its gradients against float64 (DeepSeek-V3's
    experts), gradient_check_shape(variant, shape) -> (a smaller shape of the same code, why) or None.
    """

    name: str
    variants: tuple
    implementations: tuple[Implementation, ...]
    shapes: tuple
    baseline_implementation: str  # the baseline is the variant flagged baseline=True, run through this
    make_problem: Callable
    check_views: Callable
    work: Callable
    gradient_check_shape: Callable = lambda variant, shape: None

    def variant(self, name: str):
        """The variant of that name: as recorded, or as typed (a plug-in's `sink_window` for
        `sink_window@sinks-1a2b3c4d`, see variantbench.plugins)."""
        return _named(self.variants, name, f"{self.name} variant")

    def implementation(self, name: str) -> Implementation:
        """As `variant`, for implementations."""
        return _named(self.implementations, name, f"{self.name} implementation")

    def shape(self, name: str):
        for s in self.shapes:
            if s.name == name:
                return s
        raise Unsupported(f"unknown {self.name} shape {name!r}; known: {', '.join(s.name for s in self.shapes)}")

    @property
    def baseline(self):
        (variant,) = [v for v in self.variants if v.baseline]
        return variant, self.implementation(self.baseline_implementation)


def typed_name(name: str) -> str:
    """The name a user types for a recorded one: a plug-in's entry is recorded as `name@plugin-hash`."""
    return name.split("@", 1)[0]


def answers_to(recorded: str, name: str) -> bool:
    """Whether the entry recorded as `recorded` answers to `name`, as a user types it (a plug-in's
    without its @hash) or as recorded."""
    return recorded == name or ("@" not in name and typed_name(recorded) == name)


def _named(entries, name, what):
    for entry in entries:
        if answers_to(entry.name, name):
            return entry
    raise Unsupported(f"unknown {what} {name!r}; known: {', '.join(e.name for e in entries)}")


def sample_rows(total, n, seed):
    """Up to n row indices for a correctness check, sorted: the first, the last, and seeded others."""
    import torch

    if total <= n:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    picked = torch.randperm(total - 2, generator=gen)[: n - 2] + 1
    return torch.cat([torch.tensor([0, total - 1]), picked]).sort().values


def field_names(problem, tensors) -> list[str]:
    """The field of `problem` holding each of `tensors` (by identity): "w13", or "moe.w13" where its
    sub-problem `moe` holds it (an MoE block's experts). A tensor no field holds raises."""
    names = {}

    def scan(obj, prefix):
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                scan(value, f"{prefix}{field.name}.")
            else:
                names.setdefault(id(value), prefix + field.name)

    scan(problem, "")
    if any(id(t) not in names for t in tensors):
        raise ValueError(f"{type(problem).__name__}: a tensor it differentiates is held by none of its fields")
    return [names[id(t)] for t in tensors]


def field(problem, name):
    """problem's field of that name, "moe.w13" in its sub-problem `moe`."""
    for part in name.split("."):
        problem = getattr(problem, part)
    return problem


def replaced(problem, fields: dict):
    """A copy of `problem` with these fields (names as `field_names` gives them) replaced, its
    sub-problems copied where one of theirs is."""
    own, nested = {}, {}
    for name, value in fields.items():
        head, dot, rest = name.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            own[name] = value
    return dataclasses.replace(problem, **own, **{head: replaced(getattr(problem, head), sub)
                                                  for head, sub in nested.items()})


def builtin_families() -> tuple[Family, ...]:
    from variantbench.catalog import attention, block, comms, linear, mla, moe, paged

    return (attention.FAMILY, mla.FAMILY, linear.FAMILY, paged.FAMILY, moe.FAMILY, comms.FAMILY, block.FAMILY)


def families() -> tuple[Family, ...]:
    """Every family, with the entries of the active plug-ins added: those VARIANTBENCH_PLUGINS names,
    read here on first use, never at import, so asv's benchmark processes and check's workers, which
    inherit the variable from the command that started them, see the grid it saw (variantbench.plugins)."""
    from variantbench import plugins

    return plugins.extended(builtin_families())


def family(name: str) -> Family:
    for fam in families():
        if fam.name == name:
            return fam
    raise Unsupported(f"unknown family {name!r}; known: {', '.join(f.name for f in families())}")
