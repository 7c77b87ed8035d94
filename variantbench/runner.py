"""Running cases: what a command's filter options select, and
`variantbench run`: asv over the selection, a progress line per case as it is prepared, a table of
the forward figures, and an exit code that tells a wrong kernel (1) from a crash (2).

Exit codes everywhere: 0 pass, 1 regression, mismatch or budget exceeded, 2 bad input or
infrastructure failure, 3 incomparable or no baseline. Nothing heavy is imported at module level:
the CLI imports this module for `--help` too.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import click

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INCOMPARABLE = 0, 1, 2, 3
ROOT = Path(__file__).resolve().parent.parent


class Failed(SystemExit):
    """A command's end with one line and an exit code (never a traceback). A SystemExit, so click
    and the tests see the code; `gate` catches it to write its summary saying why."""

    def __init__(self, message, code):
        super().__init__(code)
        self.message = message


def fail(message, code=EXIT_BAD_INPUT):
    click.echo(f"variantbench: {message}", err=True)
    raise Failed(message, code)


def shown(path):
    """A path as a user reads it: relative to the checkout where it lies inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def sha(rev):
    try:
        return subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError:
        fail(f"{rev}: not a commit of {ROOT}")


@dataclasses.dataclass(frozen=True)
class Selection:
    """The filter options every command shares (--family, --variant, --implementation, --shape,
    --device, --tier); empty means all. `device` None means the default device."""

    families: tuple = ()
    variants: tuple = ()
    implementations: tuple = ()
    shapes: tuple = ()
    device: str | None = None
    tier: str = "default"

    def cases(self, fam):
        """Every case of a family this selects (a tuple ending in the reason where it cannot run here)."""
        from variantbench import cases

        return cases.iter_cases(fam.name, self.device, variants=self.variants, implementations=self.implementations,
                                shapes=self.shapes, tier=self.tier)

    def run_args(self):
        """The same selection as `variantbench run` options (to measure a commit in its own checkout)."""
        args = ["--tier", self.tier]
        for flag, values in (("--family", self.families), ("--shape", self.shapes), ("--variant", self.variants),
                             ("--implementation", self.implementations)):
            for value in values:
                args += [flag, value]
        return args + (["--device", self.device] if self.device else [])


# The name filters, each with the names a family knows for it.
_NAMED = (
    ("variant", "variants", lambda fam: [v.name for v in fam.variants]),
    ("implementation", "implementations", lambda fam: [i.name for i in fam.implementations]),
    ("shape", "shapes", lambda fam: [s.name for s in fam.shapes]),
)


def resolve(selection):
    """(selection with its device decided, the selected families the name filters leave cases of).
    A name filters the families that know it; a name none of them knows, a shape of another device
    or a device that is not here is one clear line and exit 2."""
    from variantbench.device import NoDevice, default_device, require

    try:
        device = selection.device or default_device()
        require(device)
    except NoDevice as why:
        fail(str(why))
    selection, fams = check_names(dataclasses.replace(selection, device=device))
    for fam in fams:
        for name in selection.shapes:
            if name in [s.name for s in fam.shapes] and fam.shape(name).device != device:
                fail(f"shape {name} belongs to the {fam.shape(name).device} grid, not {device}")
    return selection, knowing(fams, selection)


def check_names(selection):
    """(selection with a plug-in's typed names as recorded, the families it names: --family's, else
    all). A family, variant, implementation or shape none of them knows is one clear line and exit 2."""
    from variantbench import plugins
    from variantbench.catalog import Unsupported, families, family

    try:
        fams = [family(name) for name in selection.families] or list(families())
    except Unsupported as why:
        fail(str(why))
    # A plug-in's entry is typed `sink_window` and recorded `sink_window@sinks-1a2b3c4d`
    # (variantbench.plugins): the selection carries recorded names, as the grids and results do.
    selection = dataclasses.replace(
        selection, variants=plugins.recorded(fams, "variants", selection.variants),
        implementations=plugins.recorded(fams, "implementations", selection.implementations))
    for kind, field, known in _NAMED:
        for name in getattr(selection, field):
            if not any(name in known(fam) for fam in fams):
                # several families know the same names (every one has a `reference`): each once
                fail(f"unknown {'/'.join(f.name for f in fams)} {kind} {name!r}; known: "
                     f"{', '.join(dict.fromkeys(n for fam in fams for n in known(fam)))}")
    return selection, fams


def knowing(fams, selection):
    """The families of `fams` that know every name `selection` gives (the others have no case of it)."""
    given = [(getattr(selection, field), known) for _, field, known in _NAMED]
    return [fam for fam in fams if all(not names or set(names) & set(known(fam)) for names, known in given)]


def families_with_cases(fams, selection):
    """The families with at least one case that can run here; for the others, one line saying why
    (collectives on a one-GPU machine), so asv is not started for a grid of skips."""
    kept = []
    for fam in fams:
        reasons = set()
        for case in selection.cases(fam):
            if not isinstance(case, tuple):
                kept.append(fam)
                break
            reasons.add(str(case[4]).split(": ", 1)[-1])
        else:
            click.echo(f"{fam.name}: nothing runs here ({'; '.join(sorted(reasons)) or 'no shape in this tier'})")
    if not kept:
        fail("no case of the selection can run on this machine")
    return kept


def machine_info(device):
    import platform

    from variantbench.device import identity, machine_name

    facts = identity(device)
    name = machine_name(facts)
    info = {
        "machine": name,
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
        "num_cpu": str(os.cpu_count()),
        "ram": str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024),
        **{k: str(v) for k, v in facts.items()},
    }
    return name, info


def follow_progress(process, log_path, t0):
    """Wait for asv, echoing each case the suite finishes preparing (one line per case), so a long
    benchmark grid shows progress before asv reports the whole grid. Returns asv's exit code."""
    done = len(log_path.read_text().splitlines()) if log_path.exists() else 0
    while True:
        finished = process.poll() is not None
        if log_path.exists():
            lines = log_path.read_text().splitlines()
            for line in lines[done:]:
                click.echo(f"  [{time.perf_counter() - t0:6.0f}s] {line}")
            done = len(lines)
        if finished:
            return process.returncode
        time.sleep(1.0)


def default_results_dir(device, quick):
    # CPU figures are a smoke run, not history: they go to reports/cpu-results/ (ignored), never into
    # reports/results/, the GPU history that `asv publish` renders.
    # Quick figures are one sample with no warmup: on the H100, a power-capped card, cuDNN's read 12%
    # under the 10-sample steady state (0.911 vs 1.03-1.05 ms, gqa_8 at llama-3-8b-s4k). They are a
    # first look, never history the gate compares: reports/quick-results/ (ignored).
    return ROOT / "reports" / ("cpu-results" if device == "cpu" else ("quick-results" if quick else "results"))


def benchmarks_to_run(bench, fams, quick=False):
    """The asv benchmarks `variantbench run --bench BENCH` runs of families `fams`, with the tracks of
    the timings BENCH names. A BENCH that is no regular expression, or names none, is one line and exit 2."""
    from variantbench import asvrun
    from variantbench.selecting import benchmarks_named

    try:
        benchmarks = benchmarks_named(asvrun.suite_benchmarks(ROOT), bench, [fam.name for fam in fams])
    except re.error as error:
        fail(f"--bench {bench!r}: not a regular expression ({error})")
    if quick:  # forward figures only: a backward compile doubles a FlexAttention case's setup
        benchmarks = [b for b in benchmarks if not re.search(r"\.time_forward_backward$", b)]
    if not benchmarks:
        fail(f"--bench {bench!r} matches no benchmark of the suite's {'/'.join(fam.name for fam in fams)}")
    return sorted(set(benchmarks) | set(asvrun.record_tracks(ROOT, benchmarks))) if bench else benchmarks


def changed_code(root) -> list[str]:
    """The tracked files changed in `root` since its commit, outside reports/: the results and logs
    there are what runs write (every lane of 57a9be4 on an H200 was warned of "uncommitted changes"
    that were the other lanes' published results)."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports"],
                            cwd=root, capture_output=True, text=True).stdout
    return [line[3:] for line in status.splitlines()]


def run(selection, *, bench, quick, commit, machine, results_dir, precheck_first, repeat):
    """`variantbench run` (see its --help): exits 0, 1 naming each kernel mismatch, or 2."""
    from asv.machine import MachineCollection

    from variantbench import asvrun, choices, results
    from variantbench.checking import precheck
    from variantbench.device import measured_peaks

    if quick:
        selection = dataclasses.replace(selection, tier="quick")
    selection, fams = resolve(selection)
    device = selection.device
    # On the CPU, quick times our Triton kernels through the interpreter at the tiny CPU shapes (numpy
    # emulation, ~1000x a GPU: the table says so), so a first look shows every implementation. Other
    # CPU runs leave them out: there the interpreter's time is no figure worth minutes.
    interpreted = device == "cpu" and quick
    if interpreted:
        os.environ["TRITON_INTERPRET"] = "1"  # before this process's first triton import (the checks)
    fams = families_with_cases(fams, selection)
    benchmarks = benchmarks_to_run(bench, fams, quick)  # a bad --bench fails before the peaks are measured
    head = sha(commit)
    # asv in the existing environment measures the code checked out here: recording it under another
    # commit would file HEAD's figures as BASE's and poison every later comparison.
    if head != sha("HEAD"):
        fail(f"--commit {commit} is not the checked-out commit ({sha('HEAD')[:8]}): check it out first")
    if changed_code(ROOT):
        click.echo(f"variantbench: warning: uncommitted changes are measured but recorded under {head[:8]}", err=True)
    name, info = machine_info(device)
    name = machine or name
    info["machine"] = name
    MachineCollection.save(name, info)  # ~/.asv-machine.json, where asv reads it
    click.echo(f"machine {name}: {info['gpu']} driver {info['driver']} CUDA {info['cuda']} cuDNN {info['cudnn']} "
               f"NCCL {info['nccl']} torch {info['torch']} triton {info['triton']}; commit {head[:8]}")
    peaks = measured_peaks(device)
    click.echo(f"measured peaks: {peaks['tflops']:.3g} TFLOP/s ({peaks['matmul']} matmul), {peaks['gbps']:.3g} GB/s copy")

    if quick and not selection.implementations:
        # A first look within minutes: every asv process prepares its case, and a FlexAttention one
        # compiles for 10-18 s on an H100 host; with Flex the quick grid took 214-273 s there.
        selection = dataclasses.replace(selection, implementations=tuple(dict.fromkeys(
            i.name for fam in fams for i in fam.implementations if i.ours or i is fam.baseline[1])))
    env = dict(os.environ, VARIANTBENCH_DEVICE=device, VARIANTBENCH_TIER=selection.tier,
               VARIANTBENCH_SHAPES=",".join(selection.shapes), VARIANTBENCH_VARIANTS=",".join(selection.variants),
               VARIANTBENCH_IMPLEMENTATIONS=",".join(selection.implementations))
    if os.environ.get("PYTHONPATH"):
        # asv drops PYTHONPATH from its benchmarks' environment unless ASV_PYTHONPATH carries it: peers
        # installed on it (the lent GPU's wheels, pip --target) passed the precheck in this process and
        # were then "not installed" in every asv process (liger, 86c9ee3's H200 block run).
        env["ASV_PYTHONPATH"] = os.environ["PYTHONPATH"]
    if interpreted:
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    results_dir = (results_dir or default_results_dir(device, quick)).resolve()
    # --record-samples keeps every sample, not only asv's summary: the gate tests on the samples.
    asv_args = ["--python=same", f"--set-commit-hash={head}", f"--machine={name}", "--show-stderr", "--record-samples"]
    if quick:
        asv_args.append("--quick")
    if repeat:
        asv_args += ["--attribute", f"repeat={repeat}"]
    if shutil.which("asv") is None:
        fail("asv is not installed in this environment (pip install asv)")
    t0 = time.perf_counter()
    with asvrun.exit_on_sigterm():  # a kill still removes the run's folders and stops asv
        with tempfile.TemporaryDirectory(prefix="variantbench-run-") as run_dir:
            checked = precheck(fams, selection, run_dir) if precheck_first and device == "cuda" else []
            env["VARIANTBENCH_RUN_DIR"] = run_dir
            code, path = asvrun.run_staged(
                ROOT, results_dir, name, head, asv_args, benchmarks, env,
                follow=lambda process: follow_progress(process, Path(run_dir) / "progress.log", t0),
            )
            if path is not None:
                choices.record(run_dir, path)  # asv keeps numbers only: which backend each case ran
    click.echo(f"asv finished in {time.perf_counter() - t0:.0f}s with exit code {code}")
    if path is None:
        fail(f"asv wrote no results for {head[:8]} on {name}")
    try:
        frame = results.load_file(path)
    except results.BadResults as why:
        fail(str(why))
    _print_tables(frame, fams, device, interpreted, path)
    if code != 0:
        _exit_for_failures(frame, benchmarks, fams, selection, checked, code, path)


def _print_tables(frame, fams, device, interpreted, path):
    import pandas as pd

    from variantbench import results

    pd.set_option("display.width", 200)
    emulated = {fam.name: [i.name for i in fam.implementations if i.needs_triton] for fam in fams}
    for family_name, table in results.forward_tables(frame).items():
        if device == "cpu" and interpreted and emulated.get(family_name):
            figures = (f"CPU/interpreter figures at CPU-sized shapes; {', '.join(emulated[family_name])} through the "
                       "Triton interpreter (numpy emulation): a smoke run, not a GPU prediction")
        elif device == "cpu":
            figures = "CPU figures at CPU-sized shapes: a smoke run, not a GPU prediction"
        else:
            figures = f"{device} figures"
        click.echo(f"\n{family_name} forward, {figures} ({shown(path)}):")
        click.echo(table.to_string(float_format=lambda x: f"{x:.4g}"))


def _exit_for_failures(frame, benchmarks, fams, selection, checked, code, path):
    """asv exited non-zero. Every failed benchmark (asv recorded null) of this run's selection is a
    kernel mismatch (its setup raised cases.Mismatch) or a crash: the precheck's verdict says which
    where it checked the case (forwards); a case it did not check is checked again here (with its
    gradients where a forward+backward failed). Exit 1 naming the mismatches when every failure is
    one; 2 otherwise (a crash, or asv itself failed)."""
    from variantbench import check_workers

    selected = {c.name: c for fam in fams for c in selection.cases(fam) if not isinstance(c, tuple)}
    failed = {}
    for row in frame[frame.failed & frame.benchmark.isin(benchmarks)].itertuples():
        case = f"{row.benchmark.split('.')[0].removeprefix('bench_')}/{'/'.join(row.params[:3])}"
        if case in selected:  # the results file also holds earlier runs of this commit
            failed.setdefault(case, set()).add(row.benchmark)
    verdicts = {r.case: r.status for r in checked}
    mismatched, crashed = [], []
    for case, failing in failed.items():
        with_backward = any(b.endswith(".time_forward_backward") for b in failing)
        status = verdicts.get(case)
        if status != "mismatch" and (status is None or with_backward):
            click.echo(f"checking {case} again: a kernel mismatch or a crash?")
            result = check_workers.check_one(selected[case], backward=with_backward)
            click.echo(f"  {result.line}")
            status = result.status
        (mismatched if status == "mismatch" else crashed).append(case)
    where = f"the results of the others are in {shown(path)}"
    if mismatched and not crashed:
        fail(f"kernel mismatch: {', '.join(mismatched)} disagree(s) with the reference (the check above says by "
             f"how much); {where}", EXIT_FAIL)
    named = "".join(f"; {label}: {', '.join(names)}" for label, names in
                    (("crashed", crashed), ("mismatched", mismatched)) if names)
    fail(f"asv exited {code}: a benchmark failed or crashed (its message is in the log above){named}; {where}",
         EXIT_BAD_INPUT)
