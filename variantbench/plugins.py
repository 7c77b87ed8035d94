"""Plug-ins: variants and candidate kernels from outside the package, as plain data.

A plug-in is a Python file (a path) or an importable module (a dotted name) defining

    VARIANTS = (AttentionVariant("sink_window", mask=sink_window(1024, 4)), MoEVariant("top1", router=top1))
    IMPLEMENTATIONS = (Kernel("attention", "my_flash", prepare, variants=("gqa_8",)),)   # optional

VARIANTS holds catalog entries of any family (the family is the entry's type), with their small
functions (a mask or score function, a router) defined in the plug-in itself; IMPLEMENTATIONS holds
`Kernel`s: a candidate kernel for existing variants or the plug-in's own. Nothing registers itself:
the catalog reads the two lists.

Which plug-ins: `--plugin PATH_OR_MODULE` on every command (repeatable), and `plugins = [...]` in
`[tool.variantbench]` of the pyproject.toml in the working directory (paths relative to it). The
command resolves them once (`activate`) into VARIANTBENCH_PLUGINS (absolute paths and module names,
os.pathsep between them), which the processes it starts inherit: asv's benchmark processes, check's
workers, the runs that measure other commits. `catalog.families()` reads it on first use, so a
plug-in variant is in every grid a built-in one is in. Where a command starts with the variable
set, it is the whole list (its parent read the pyproject): the pyproject is not read again.

Names: an entry is recorded as `name@plugin-hash8`, the plug-in's name (file stem or module name)
and the first 8 hex digits of the sha256 of its file. Results, the report, compare and the gate
file it under that, so an edited plug-in starts a new history rather than silently continuing the
old one's; users type `name` (`Family.variant` takes either). A plug-in's helpers in other files are
not hashed: keep what defines the math in the plug-in's own file.
"""

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from variantbench.catalog import Implementation, answers_to, typed_name

ENV = "VARIANTBENCH_PLUGINS"
# Names travel comma-separated (VARIANTBENCH_VARIANTS) and `/`-joined (a case's name): neither may
# appear in one, nor `@`, which starts the plug-in's tag.
NAME = re.compile(r"[A-Za-z0-9_.-]+")


class PluginError(Exception):
    """A plug-in cannot be used; the message is the one line the command prints (exit 2)."""


@dataclass(frozen=True)
class Kernel:
    """A plug-in's implementation of a family's variants: `prepare(variant, problem)` returns the call,
    as a kernels/ module's prepare does (compile and tune inside it; the call only launches work).
    `variants`: the (typed) names of the variants it runs, every variant of the family if empty.
    `backward`: its call is differentiable, so its gradients are checked too. `unsupported(variant,
    shape)`: why it cannot run a case, or None."""

    family: str
    name: str
    prepare: Callable
    variants: tuple = ()
    fused: bool = True
    backward: bool = False
    backward_on_cpu: bool = True
    unsupported: Callable | None = None
    needs_triton: bool = False
    autotunes: bool = False


@dataclass(frozen=True)
class PluginImplementation(Implementation):
    """A Kernel in the catalog: there is no module to import, `load()` hands over its prepare."""

    prepare: Callable | None = None

    def load(self):
        return SimpleNamespace(prepare=self.prepare)


@dataclass(frozen=True)
class Plugin:
    """One loaded plug-in: where it came from, its tag (`name-hash8`) and its two lists as written."""

    source: str
    tag: str
    variants: tuple
    kernels: tuple


def _is_path(source: str) -> bool:
    return source.endswith(".py") or os.sep in source


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def _first_line(error) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else '(no message)'}"


def _import_file(source: str):
    """(module, tag) of a plug-in file, imported under a name that holds its hash: the same content
    imports once per process, an edited file is a new module."""
    path = Path(source)
    if not path.is_file():
        raise PluginError(f"plug-in {source}: no such file")
    name = re.sub(r"[^A-Za-z0-9_]", "_", path.stem)
    tag = f"{name}-{_digest(path)}"
    module_name = f"variantbench_plugin_{tag.replace('-', '_')}"
    if module_name in sys.modules:
        return sys.modules[module_name], tag
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any failure of a user's file is one line, exit 2
        del sys.modules[module_name]
        raise PluginError(f"plug-in {source} failed to import: {_first_line(error)}") from None
    return module, tag


def _import_module(source: str):
    try:
        module = importlib.import_module(source)
    except Exception as error:  # noqa: BLE001 - as in _import_file
        raise PluginError(f"plug-in {source} failed to import: {_first_line(error)}") from None
    if not getattr(module, "__file__", None):
        raise PluginError(f"plug-in {source}: a module with no file has no content to hash")
    return module, f"{source}-{_digest(Path(module.__file__))}"


def load(source: str) -> Plugin:
    module, tag = (_import_file if _is_path(source) else _import_module)(source)
    if not hasattr(module, "VARIANTS") and not hasattr(module, "IMPLEMENTATIONS"):
        raise PluginError(f"plug-in {source} defines neither VARIANTS nor IMPLEMENTATIONS")
    lists = {}
    for attr in ("VARIANTS", "IMPLEMENTATIONS"):
        value = getattr(module, attr, ())
        if not isinstance(value, (tuple, list)):
            raise PluginError(f"plug-in {source}: {attr} is a {type(value).__name__}, not a tuple of entries")
        lists[attr] = tuple(value)
    return Plugin(source, tag, lists["VARIANTS"], lists["IMPLEMENTATIONS"])


def _implementation(kernel: Kernel, name: str) -> PluginImplementation:
    own = kernel.unsupported

    def unsupported(variant, shape):
        if kernel.variants and typed_name(variant.name) not in kernel.variants:
            return f"{kernel.name} runs {', '.join(kernel.variants)} only"
        return own(variant, shape) if own else None

    return PluginImplementation(name, module="", fused=kernel.fused, backward=kernel.backward,
                                backward_on_cpu=kernel.backward_on_cpu, unsupported=unsupported,
                                needs_triton=kernel.needs_triton, autotunes=kernel.autotunes, prepare=kernel.prepare)


def extend(builtin: tuple, plugins) -> tuple:
    """`builtin` families with the plug-ins' entries added, each renamed `name@tag`. A plug-in entry
    that is no family's, names an unknown family or variant, or takes a name already taken (by a
    built-in entry or another plug-in's, typed names compared) raises PluginError."""
    by_type = {type(fam.variants[0]): fam.name for fam in builtin}
    known_types = ", ".join(t.__name__ for t in by_type)
    variants = {fam.name: list(fam.variants) for fam in builtin}
    implementations = {fam.name: list(fam.implementations) for fam in builtin}
    owner = {(fam.name, kind, typed_name(e.name)): "built in" for fam in builtin
             for kind, entries in (("variant", fam.variants), ("implementation", fam.implementations)) for e in entries}

    def claim(plugin, family, kind, name):
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise PluginError(f"plug-in {plugin.source}: {family} {kind} name {name!r} may hold only letters, "
                              "digits, '_', '.' and '-'")
        key = (family, kind, name)
        if key in owner:
            raise PluginError(f"plug-in {plugin.source}: {family} {kind} {name!r} is already defined ({owner[key]})")
        owner[key] = f"by plug-in {plugin.source}"
        return f"{name}@{plugin.tag}"

    for plugin in plugins:
        for i, entry in enumerate(plugin.variants):
            family = next((f for t, f in by_type.items() if isinstance(entry, t)), None)
            if family is None:
                raise PluginError(f"plug-in {plugin.source}: VARIANTS[{i}] is of type {type(entry).__name__}, not one "
                                  f"of {known_types}")
            if entry.baseline:
                raise PluginError(f"plug-in {plugin.source}: {family} variant {entry.name!r} sets baseline=True; the "
                                  "family baseline is built in (compare against any variant with `try --against`)")
            variants[family].append(dataclasses.replace(entry, name=claim(plugin, family, "variant", entry.name)))
    for plugin in plugins:  # after every plug-in's variants: a kernel may run another plug-in's
        for i, kernel in enumerate(plugin.kernels):
            if not isinstance(kernel, Kernel):
                raise PluginError(f"plug-in {plugin.source}: IMPLEMENTATIONS[{i}] is of type {type(kernel).__name__}, "
                                  "not variantbench.plugins.Kernel, which names its family: Kernel(family, name, prepare)")
            if kernel.family not in variants:
                raise PluginError(f"plug-in {plugin.source}: kernel {kernel.name!r} names the unknown family "
                                  f"{kernel.family!r}; known: {', '.join(variants)}")
            typed = [typed_name(v.name) for v in variants[kernel.family]]
            unknown = [v for v in kernel.variants if v not in typed]
            if unknown:
                raise PluginError(f"plug-in {plugin.source}: kernel {kernel.name!r} names unknown {kernel.family} "
                                  f"variant(s) {', '.join(map(repr, unknown))}; known: {', '.join(typed)}")
            name = claim(plugin, kernel.family, "implementation", kernel.name)
            implementations[kernel.family].append(_implementation(kernel, name))
    return tuple(dataclasses.replace(fam, variants=tuple(variants[fam.name]),
                                     implementations=tuple(implementations[fam.name])) for fam in builtin)


_extended: dict = {}  # VARIANTBENCH_PLUGINS' value -> the families it makes


def sources() -> list[str]:
    return [s for s in os.environ.get(ENV, "").split(os.pathsep) if s]


def extended(builtin: tuple) -> tuple:
    """`builtin` with the plug-ins VARIANTBENCH_PLUGINS names, loaded once per process and value."""
    listed = sources()
    if not listed:
        return builtin
    key = os.pathsep.join(listed)
    if key not in _extended:
        _extended[key] = extend(builtin, [load(s) for s in listed])
    return _extended[key]


def is_plugin(entry) -> bool:
    """Whether a catalog entry (variant or implementation) came from a plug-in."""
    return "@" in entry.name


def recorded(fams, kind: str, names) -> tuple:
    """Names as the families record them (`kind`: "variants" or "implementations"): a typed plug-in
    name becomes its recorded one in every family that has it; a name none knows stays, for the
    caller's error."""
    found = []
    for name in names:
        matches = [e.name for fam in fams for e in getattr(fam, kind) if answers_to(e.name, name)]
        found += matches or [name]
    return tuple(dict.fromkeys(found))


def project_plugins(folder: Path) -> list[str]:
    """`[tool.variantbench] plugins` of folder/pyproject.toml (none where there is no such file), paths
    made absolute against the folder."""
    pyproject = folder / "pyproject.toml"
    if not pyproject.is_file():
        return []
    try:
        table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("variantbench", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise PluginError(f"{pyproject}: unreadable ({error})") from None
    listed = table.get("plugins", [])
    if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
        raise PluginError(f"{pyproject}: [tool.variantbench] plugins must be a list of paths or module names")
    return [_absolute(s, folder) for s in listed]


def _absolute(source: str, folder: Path) -> str:
    return str((folder / Path(source).expanduser()).resolve()) if _is_path(source) else source


def activate(given=(), folder: Path | None = None) -> tuple[Plugin, ...]:
    """The plug-ins of a command: `given` (its --plugin options) after those VARIANTBENCH_PLUGINS
    names where it is set, else those of the working directory's pyproject.toml. Loads and checks
    them (PluginError on the first problem), then sets VARIANTBENCH_PLUGINS for this process's
    catalog and the processes it starts. Module plug-ins are imported as `python -m` would find
    them (the working directory first on the path), and their folder joins PYTHONPATH."""
    from variantbench.catalog import builtin_families

    folder = folder or Path.cwd()
    listed = sources() or project_plugins(folder)
    chosen = list(dict.fromkeys(listed + [_absolute(s, folder) for s in given]))
    if not chosen:
        return ()
    if any(not _is_path(s) for s in chosen) and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    value = os.pathsep.join(chosen)
    _extended.pop(value, None)  # a file edited since this process last loaded it is loaded again
    plugins = [load(s) for s in chosen]
    _extended[value] = extend(builtin_families(), plugins)
    os.environ[ENV] = value
    roots = [str(_module_root(s)) for s in chosen if not _is_path(s)]
    if roots:
        path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(roots + path))
    return tuple(plugins)


def activate_for(given, device) -> list[str]:
    """`activate` for a command on `device` (None: the default one): a line per plug-in to print.
    On the CPU Triton interprets: a plug-in's Triton kernels are made when it is imported, so
    TRITON_INTERPRET is set first."""
    from variantbench.device import NoDevice, default_device

    try:
        device = device or default_device()
    except NoDevice as why:
        raise PluginError(str(why)) from None
    if device == "cpu" and (given or sources() or project_plugins(Path.cwd())):
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return [describe(plugin) for plugin in activate(given)]


def _module_root(name: str) -> Path:
    """The folder a module's top-level package is found in (already imported by `load`)."""
    origin = Path(sys.modules[name].__file__).resolve()
    root = origin.parent.parent if origin.name == "__init__.py" else origin.parent
    for _ in range(name.count(".")):
        root = root.parent
    return root


def describe(plugin: Plugin) -> str:
    """One line: where a plug-in came from, its tag and what it adds."""
    added = [typed_name(e.name) for e in plugin.variants] + [f"{k.name} ({k.family})" for k in plugin.kernels
                                                             if isinstance(k, Kernel)]
    return f"plug-in {plugin.source} as @{plugin.tag}: {', '.join(added) or 'nothing'}"
