"""`variantbench try`: one variant B, built in or a plug-in's, judged against a variant A in one command.

At each shape: every implementation of B is prepared and checked against the float64 reference on
fresh inputs (variantbench.cases.prepare_checked; the gradients too where it has a backward): a wrong
one is named and never timed. Then every fused implementation of B that is right, and A's fused
implementations (the built-in ones: a plug-in's candidate kernel is judged against the family's
best, not against itself), are timed side by side in alternating blocks, the one measurement the
suite's ratio to baseline comes from (variantbench.metrics); B's reference is timed apart, as there.
A is judged by its fastest fused implementation, and so is B: each of B's fused implementations gets
its cost per useful work over A's, the standard error of that ratio's log and the signal-budget
decision on it (variantbench.budget, Bonferroni over every ratio of this command); B's verdict at a
shape is its fastest fused implementation's.

Exit: 0 within budget (or at budget: over, not significantly); 1 an implementation of B is wrong,
or B is over budget (or has no fused implementation that runs); 2 bad input, or an implementation of
B crashed; 3 no baseline: A has no fused implementation that runs at a shape.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field

import click

from variantbench.runner import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_INCOMPARABLE, EXIT_PASS, ROOT, fail
from variantbench.shapes import in_tier

SAID = {"wrong": "MISMATCH", "skip": "skip", "error": "ERROR"}  # a progress line's first word, by status
VERDICT_EXITS = {"within": EXIT_PASS, "at budget": EXIT_PASS, "over budget": EXIT_FAIL, "failed": EXIT_FAIL}


@dataclass
class Tried:
    """One implementation of a variant at one shape: `status` ok, wrong (a mismatch), error (it raised)
    or skip (it cannot run this case), with the reason; where ok, its Side and check, then figures."""

    implementation: object
    status: str = "ok"
    reason: str = ""
    side: object = None
    check: dict | None = None
    figures: dict = field(default_factory=dict)
    verdict: str | None = None


@dataclass(frozen=True)
class Against:
    """A: a variant of B's family at B's shapes, or of another family at a shape of its own."""

    family: object
    variant: object
    shape: object = None

    @property
    def name(self) -> str:
        if self.shape is None:
            return self.variant.name
        return f"{self.family.name}/{self.variant.name}@{self.shape.name}"


def parse_against(text, fam):
    """--against: VARIANT (of B's family), or FAMILY/VARIANT@SHAPE. Another family's variant needs its
    shape: B's shapes are not its. The ratio per useful work compares any two; the wall-time ratio
    compares the two calls as they are (the same tokens, where the shapes say so)."""
    from variantbench.catalog import Unsupported, family

    if text is None:
        return Against(fam, fam.baseline[0])
    if "/" not in text:
        return Against(fam, fam.variant(text))
    family_name, _, rest = text.partition("/")
    name, _, shape_name = rest.partition("@")
    other = family(family_name)
    if other.name != fam.name and not shape_name:
        raise Unsupported(f"--against {text}: the {other.name} family's variants run at its own shapes; say which, "
                          f"as {text}@SHAPE (known: {', '.join(s.name for s in other.shapes)})")
    return Against(other, other.variant(name), other.shape(shape_name) if shape_name else None)


@dataclass
class AtShape:
    """What `judge` found at one shape; `decide` adds the verdicts."""

    shape: object
    mine: list  # Tried, one per implementation of B, in catalog order
    theirs: list = field(default_factory=list)  # Tried, A's fused implementations that run and are right
    best: Tried | None = None  # A's fastest fused implementation, None where none runs
    verdict: str = "failed"
    fastest: Tried | None = None


def find_variant(name):
    """(family, variant) of the one family that has a variant of that name (typed or recorded)."""
    from variantbench.catalog import Unsupported, families

    found = []
    for fam in families():
        try:
            found.append((fam, fam.variant(name)))
        except Unsupported:
            continue
    if len(found) > 1:
        fail(f"variant {name!r} is in several families ({', '.join(f.name for f, _ in found)})")
    if not found:
        fail(f"unknown variant {name!r}; known: " + "; ".join(
            f"{fam.name}: {', '.join(v.name for v in fam.variants)}" for fam in families()))
    return found[0]


def headline(fam, device):
    """The family's headline shape on this device: its first of the quick tier, else of the default."""
    from variantbench.shapes import in_tier

    for tier in ("quick", "default", "full"):
        for shape in fam.shapes:
            if shape.device == device and in_tier(shape, tier):
                return shape
    fail(f"{fam.name} has no shape on {device}")


def _tried(fam, variant, impl, shape, device, echo, gradients):
    from variantbench import cases, metrics
    from variantbench.catalog import Unsupported

    tried = Tried(impl)
    try:
        case = cases.resolve(fam.name, variant.name, impl.name, shape.name, device)
    except Unsupported as why:
        tried.status, tried.reason = "skip", str(why)
        echo(f"  skip     {variant.name}/{impl.name}: {why}")
        return tried
    t0 = time.perf_counter()
    try:
        problem, call, check = cases.prepare_checked(case)
        if gradients and not cases.backward_unsupported(case):
            _, _, with_grad = cases.prepare_checked(case, requires_grad=True)
            check.update({k: v for k, v in with_grad.items() if k.startswith("max_error_d") or k == "gradients_at"})
        tried.side = metrics.Side(variant, problem, metrics.timed_as_served(case, problem, call), work=fam.work)
        tried.check = check
    except cases.Mismatch as why:
        tried.status, tried.reason = "wrong", str(why)
    except Unsupported as why:  # found only when prepared: torch.compile refusing the graph
        tried.status, tried.reason = "skip", str(why)
    except Exception as error:  # noqa: BLE001 - a crash is one line; the other implementations go on
        tried.status, tried.reason = "error", f"{case.name}: {type(error).__name__}: {cases.first_line(error)}"
    finally:
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()
    if tried.status == "ok":
        grads = "".join(f", {k[len('max_error_'):]} {v:.1e}" for k, v in check.items() if k.startswith("max_error_d"))
        grads += f" ({check['gradients_at']})" if "gradients_at" in check else ""
        echo(f"  ok       {case.name}: max error {check['max_error']:.2e} <= {check['tolerance']:.2e}{grads} "
             f"({time.perf_counter() - t0:.1f}s)")
    else:
        echo(f"  {SAID[tried.status]:8} {tried.reason}")
    return tried


def judge(fam, variant, against, shape, device, echo) -> AtShape:
    """Check B's implementations and A's fused ones at `shape`, then time them side by side."""
    from variantbench import metrics
    from variantbench.device import measured_peaks, require
    from variantbench.plugins import is_plugin

    echo(f"[{shape.name}] checking {fam.name}/{variant.name} against the float64 reference")
    mine = [_tried(fam, variant, impl, shape, device, echo, gradients=True) for impl in fam.implementations]
    theirs = [t for t in mine if t.implementation.fused and not is_plugin(t.implementation)]
    a_family, a_variant, a_shape = against.family, against.variant, against.shape or shape
    if (a_family.name, a_variant.name, a_shape.name) != (fam.name, variant.name, shape.name):
        misfit = a_variant.unsupported(a_shape)
        echo(f"[{shape.name}] {against.name} does not fit {a_shape.name}: {misfit}" if misfit else
             f"[{shape.name}] checking {against.name}'s fused implementations (A)")
        # A's fused implementations of the default tier: `compiled` (full tier) would compile the
        # reference of A for minutes at llama shapes and never be A's fastest. Flex is nightly too: an
        # A that only Flex and ours run is timed through ours.
        theirs = [] if misfit else [_tried(a_family, a_variant, impl, a_shape, device, echo, gradients=False)
                                    for impl in a_family.implementations
                                    if impl.fused and not is_plugin(impl) and in_tier(impl, "default")]
    theirs = [t for t in theirs if t.status == "ok"]
    result = AtShape(shape, mine, theirs)
    if not theirs:
        echo(f"[{shape.name}] no baseline: no fused implementation of {against.name} runs here")
        return result
    timed = [t for t in mine if t.status == "ok" and t.implementation.fused]
    # keyed by (variant, implementation): where A is B, A's sides are B's own, timed once
    sides = {(t.side.variant.name, t.implementation.name): t.side for t in timed + theirs}
    dev = require(device)
    echo(f"[{shape.name}] timing {len(sides)} fused calls side by side in alternating blocks")
    metrics.measure_side_by_side(sides, dev)
    result.best = min(theirs, key=lambda t: t.side.ms)
    peaks = measured_peaks(device)
    for t in timed:
        t.figures = metrics.against(t.side, result.best.side, fam.work, peaks)
    reference = [t for t in mine if t.status == "ok" and not t.implementation.fused]
    for t in reference:
        echo(f"[{shape.name}] timing {t.implementation.name} apart ({metrics.REFERENCE_ROUNDS} rounds)")
        metrics.time_apart(t.side, dev)
        t.figures = metrics.against(t.side, result.best.side, fam.work, peaks)
    for t in timed + reference + theirs:
        clock = t.side.power.sm_clock_mhz if t.side.power else None
        t.figures = {**t.figures, "sm_clock_mhz": clock} if t.figures else {"sm_clock_mhz": clock}
    return result


def decide(results, settings, fam, variant):
    """Each fused ratio's budget verdict (Bonferroni over them all) and B's verdict at each shape."""
    from variantbench import budget

    limit = settings.budget_for(fam.name, variant.name)
    ratios = [t for r in results for t in r.mine if t.implementation.fused and "ratio_to_baseline" in t.figures]
    for t in ratios:
        se = budget.standard_error(t.figures["ratio_standard_error"], None)
        t.verdict = budget.verdict(t.figures["ratio_to_baseline"], se, limit, len(ratios))
    for r in results:
        judged = [t for t in r.mine if t.verdict is not None]
        if judged:
            r.fastest = min(judged, key=lambda t: t.figures["ratio_to_baseline"])
            r.verdict = r.fastest.verdict
    return limit


def exit_code(results) -> tuple[int, str]:
    """(exit code, the command's verdict in words): wrong, then crashed, then no baseline, then budget."""
    tried = [t for r in results for t in r.mine]
    if any(t.status == "wrong" for t in tried):
        return EXIT_FAIL, "wrong"
    if any(t.status == "error" for t in tried):
        return EXIT_BAD_INPUT, "crashed"
    if any(r.best is None for r in results):
        return EXIT_INCOMPARABLE, "no baseline"
    order = ("failed", "over budget", "at budget", "within")  # the worst shape decides
    worst = min((r.verdict for r in results), key=order.index)
    return VERDICT_EXITS[worst], worst


def _number(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _row(t: Tried) -> dict:
    f = t.figures
    return {"implementation": t.implementation.name, "fused": t.implementation.fused, "status": t.status,
            "reason": t.reason or None, "ms": _number(f.get("ms")), "tflops": _number(f.get("tflops")),
            "gbps": _number(f.get("gbps")), "percent_of_peak": _number(f.get("percent_of_peak")),
            "ratio": _number(f.get("ratio_to_baseline")), "time_ratio": _number(f.get("time_ratio")),
            "standard_error": _number(f.get("ratio_standard_error")), "noise": _number(f.get("noise")),
            "verdict": t.verdict, "sm_clock_mhz": _number(f.get("sm_clock_mhz")),
            "max_error": _number(t.check["max_error"]) if t.check else None,
            "tolerance": _number(t.check["tolerance"]) if t.check else None}


def document(fam, variant, against, device, label, limit, results, code, verdict) -> dict:
    """The verdict as one JSON-ready document: what the tables say, for scripts and agents."""
    shapes = []
    for r in results:
        best = r.best
        shapes.append({
            "shape": r.shape.name, "verdict": r.verdict if best else "no baseline",
            "fastest": r.fastest.implementation.name if r.fastest else None,
            "against": {"variant": against.name, "implementation": best.implementation.name if best else None,
                        "ms": _number(best.side.ms) if best else None,
                        "implementations": [{"implementation": t.implementation.name, "ms": _number(t.side.ms),
                                             "sm_clock_mhz": _number(t.figures.get("sm_clock_mhz"))}
                                            for t in r.theirs if t.side.samples]},
            "implementations": [_row(t) for t in r.mine],
        })
    return {"family": fam.name, "variant": variant.name, "against": against.name, "device": device,
            "figures": label, "budget": limit, "verdict": verdict, "exit_code": code, "shapes": shapes}


def figures_label(device, results) -> str:
    if device != "cpu":
        return f"{device} figures"
    emulated = sorted({t.implementation.name for r in results for t in r.mine + r.theirs
                       if t.implementation.needs_triton and t.figures})
    through = f"; {', '.join(emulated)} through the Triton interpreter (numpy emulation)" if emulated else ""
    return f"CPU figures at CPU-sized shapes{through}: a smoke run, not a GPU prediction"


def _shown(value, form):
    return "-" if value is None else format(value, form)


def table(r: AtShape, against, device) -> str:
    """One shape's verdict table, the reasons of what did not run, and B's verdict there."""
    import pandas as pd

    from variantbench.catalog import typed_name

    a = f"x {typed_name(against.name)}"
    rows = []
    for t in r.mine:
        row = _row(t)
        rows.append({"implementation": row["implementation"], "status": t.status, "ms": _shown(row["ms"], ".4g"),
                     "TFLOP/s": _shown(row["tflops"], ".3g"), "% roofline": _shown(row["percent_of_peak"], ".3g"),
                     f"{a} per useful work": _shown(row["ratio"], ".3f"), "time ratio": _shown(row["time_ratio"], ".3f"),
                     "± se": _shown(row["standard_error"], ".1%"), "verdict": t.verdict or "-",
                     "max error": _shown(row["max_error"], ".2e"),
                     **({"MHz": _shown(row["sm_clock_mhz"], ".0f")} if device == "cuda" else {})})
    lines = [pd.DataFrame(rows).to_string(index=False)]
    lines += [f"  {t.implementation.name}: {t.status}: {t.reason}" for t in r.mine if t.reason]
    if r.best is None:
        lines.append(f"verdict: no baseline: no fused implementation of {against.name} runs at {r.shape.name}")
    elif r.fastest is None:
        lines.append(f"verdict: failed: no fused implementation of B gave a figure at {r.shape.name}")
    else:
        f = r.fastest.figures
        lines.append(f"verdict: {r.verdict}: fastest fused {r.fastest.implementation.name} at "
                     f"{f['ratio_to_baseline']:.3f}{a} per useful work (± {f['ratio_standard_error']:.1%}), "
                     f"{f['time_ratio']:.3f}{a} in wall time")
    return "\n".join(lines)


def run(name, *, against, shapes, json_path, device):
    """`variantbench try` (see its --help). Exits with the code `exit_code` gives."""
    from variantbench import gate
    from variantbench.catalog import Unsupported
    from variantbench.device import NoDevice, default_device, require

    try:
        device = device or default_device()
        require(device)
    except NoDevice as why:
        fail(str(why))
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first triton import: our kernels interpreted
    fam, variant = find_variant(name)
    try:
        base = parse_against(against, fam)
        chosen = [fam.shape(s) for s in shapes] or [headline(fam, device)]
    except Unsupported as why:
        fail(str(why))
    if base.shape is not None and base.shape.device != device:
        fail(f"--against {base.name}: {base.shape.name} belongs to the {base.shape.device} grid, not {device}")
    for shape in chosen:
        if shape.device != device:
            fail(f"shape {shape.name} belongs to the {shape.device} grid, not {device}")
        reason = variant.unsupported(shape)
        if reason:
            fail(f"{variant.name} does not fit {shape.name}: {reason}")
    if json_path not in (None, "-") and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        fail(f"--json {json_path}: no folder to write it in")
    settings = gate.load_settings(ROOT / "pyproject.toml")
    to_stdout = json_path != "-"  # progress, and with `--json -` the tables too, go to stderr

    def echo(line):
        click.echo(line, err=True)

    t0 = time.perf_counter()
    echo(f"try {fam.name}/{variant.name} against {base.name} on {device} at {', '.join(s.name for s in chosen)}")
    results = [judge(fam, variant, base, shape, device, echo) for shape in chosen]
    limit = decide(results, settings, fam, variant)
    code, verdict = exit_code(results)
    label = figures_label(device, results)
    for r in results:
        best = f" through {r.best.implementation.name} ({r.best.side.ms:.4g} ms)" if r.best else ""
        click.echo(f"\n{fam.name}/{variant.name} at {r.shape.name} against {base.name}{best}; budget {limit:g}; "
                   f"{label}\n{table(r, base, device)}", err=not to_stdout)
    click.echo(f"\ntry: {verdict} (exit {code}) in {time.perf_counter() - t0:.0f}s", err=not to_stdout)
    if json_path is not None:
        text = json.dumps(document(fam, variant, base, device, label, limit, results, code, verdict), indent=1,
                          allow_nan=False)
        if json_path == "-":
            click.echo(text)
        else:
            try:
                with open(json_path, "w") as out:
                    out.write(text + "\n")
            except OSError as why:
                fail(f"cannot write {json_path}: {why.strerror or why}")
    raise SystemExit(code)
