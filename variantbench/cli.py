"""The `variantbench` command. Exit codes everywhere: 0 pass, 1 regression, mismatch or budget
exceeded, 2 bad input or infrastructure failure, 3 incomparable or no baseline."""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INCOMPARABLE = 0, 1, 2, 3
ROOT = Path(__file__).resolve().parent.parent


def fail(message, code=EXIT_BAD_INPUT):
    click.echo(f"variantbench: {message}", err=True)
    sys.exit(code)


def _device(requested):
    from variantbench.device import NoDevice, default_device, require

    try:
        device = requested or default_device()
        require(device)
    except NoDevice as why:
        fail(str(why))
    return device


def _families(family_names, variants, implementations, shapes, device):
    """The selected families (all by default) that the name filters leave cases of. A name filters
    the families that know it; a name none of them knows, or a shape of another device, is one clear
    line and exit 2."""
    from variantbench.catalog import Unsupported, families, family

    try:
        fams = [family(name) for name in family_names] or list(families())
    except Unsupported as why:
        fail(str(why))
    dimensions = (
        ("variant", variants, lambda fam: [v.name for v in fam.variants]),
        ("implementation", implementations, lambda fam: [i.name for i in fam.implementations]),
        ("shape", shapes, lambda fam: [s.name for s in fam.shapes]),
    )
    for kind, names, known in dimensions:
        for name in names:
            if not any(name in known(fam) for fam in fams):
                fail(f"unknown {'/'.join(f.name for f in fams)} {kind} {name!r}; known: "
                     f"{', '.join(n for fam in fams for n in known(fam))}")
    for fam in fams:
        for name in shapes:
            if name in [s.name for s in fam.shapes] and fam.shape(name).device != device:
                fail(f"shape {name} belongs to the {fam.shape(name).device} grid, not {device}")
    return [fam for fam in fams if all(not names or set(names) & set(known(fam)) for _, names, known in dimensions)]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Benchmarks for LLM building blocks: is each fused kernel right, is each variant within the
    signal budget of its family's baseline, and did anything get slower.

    Exit codes: 0 pass, 1 mismatch/regression/over budget, 2 bad input or infrastructure failure,
    3 incomparable or no baseline."""


@main.command("list")
@click.option("--family", "family_name", default=None, help="Only this family.")
def list_command(family_name):
    """The catalog as a table: variants, which implementations run them, the baseline, the shapes."""
    import pandas as pd

    from variantbench.catalog import Unsupported, families, family

    try:
        fams = [family(family_name)] if family_name else families()
    except Unsupported as why:
        fail(str(why))
    pd.set_option("display.width", 200)
    pd.set_option("display.max_colwidth", 70)
    for fam in fams:
        base_variant, base_impl = fam.baseline
        rows = []
        for v in fam.variants:
            row = {"variant": v.name, "baseline": f"{base_impl.name}" if v is base_variant else ""}
            for impl in fam.implementations:
                unsupported = [s.name for s in fam.shapes if impl.unsupported(v, s)]
                row[impl.name] = "yes" if not unsupported else ("no" if len(unsupported) == len(fam.shapes) else "some")
            row["note"] = v.note
            rows.append(row)
        click.echo(f"family {fam.name}: baseline {base_variant.name} through {base_impl.name}\n")
        click.echo(pd.DataFrame(rows).to_string(index=False))
        shapes = pd.DataFrame([dataclasses.asdict(s) for s in fam.shapes]).rename(columns={"name": "shape"})
        click.echo("\n" + shapes.to_string(index=False))
        reasons = sorted({impl.unsupported(v, s) and f"{impl.name}: {impl.unsupported(v, s)}"
                          for v in fam.variants for impl in fam.implementations for s in fam.shapes} - {None})
        if reasons:
            click.echo("\nwhy not everywhere (some/no above):\n  " + "\n  ".join(reasons))
        click.echo("")


def _families_with_cases(fams, device, variants, implementations, shapes, tier):
    """The families with at least one case that can run here; for the others, one line saying why
    (collectives on a one-GPU machine), so asv is not started for a grid of skips."""
    from variantbench import cases

    kept = []
    for fam in fams:
        reasons = set()
        for case in cases.iter_cases(fam.name, device, variants=variants, implementations=implementations,
                                     shapes=shapes, tier=tier):
            if not isinstance(case, tuple):
                kept.append(fam)
                break
            reasons.add(str(case[4]).split(": ", 1)[-1])
        else:
            click.echo(f"{fam.name}: nothing runs here ({'; '.join(sorted(reasons)) or 'no shape in this tier'})")
    if not kept:
        fail("no case of the selection can run on this machine")
    return kept


def _default_jobs():
    # Half the cores: a FlexAttention compile runs its own Triton compile threads.
    return max(1, min(8, (os.cpu_count() or 2) // 2))


_jobs_option = click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
                            help="Processes preparing cases side by side (default: half the cores, at most "
                                 "8, on CUDA; 1 on CPU). Autotuning kernels still run one at a time.")
_tier_help = ("Which shapes: quick (headline), default (every commit), full (the whole grid). "
              "See variantbench.shapes.TIERS.")


def _run_checks(fams, device, variants, implementations, shapes, tier, jobs, echo, failures_only=False,
                backward=True):
    """Check every case of the selection; echo one line each (skips too), or only those that fail.
    Returns the CheckResults."""
    from variantbench import cases

    runnable = []
    for fam in fams:
        for case in cases.iter_cases(fam.name, device, variants=variants, implementations=implementations,
                                     shapes=shapes, tier=tier):
            if isinstance(case, tuple):
                if not failures_only:
                    echo(f"skip      {'/'.join(case[:4])}: {case[4]}")
            else:
                runnable.append(case)
    if jobs is None:
        jobs = _default_jobs() if device == "cuda" else 1
    t0 = time.perf_counter()
    count = len(runnable)

    def report(result):
        report.done += 1
        if result.status != "ok" or not failures_only:
            echo(f"[{report.done}/{count} {time.perf_counter() - t0:4.0f}s] {result.line}")

    report.done = 0
    return cases.check_many(runnable, jobs, report, backward)


@main.command()
@click.option("--family", "family_names", multiple=True, help="Only these families (default: all).")
@click.option("--variant", "variants", multiple=True, help="Only these variants (repeatable).")
@click.option("--implementation", "implementations", multiple=True, help="Only these implementations.")
@click.option("--shape", "shapes", multiple=True, help="Only these shapes.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda if a GPU is visible.")
@click.option("--tier", type=click.Choice(["quick", "default", "full"]), default="full", show_default=True,
              help=_tier_help)
@_jobs_option
def check(family_names, variants, implementations, shapes, device, tier, jobs):
    """Check every implementation against its reference on fresh random inputs: the output on
    sampled rows, and, where the case has a backward, the gradients those rows give q, k and v.

    Prints one line per case (ok, MISMATCH, skip with its reason) as it finishes; exits 1 naming each
    mismatch, 2 if a case crashed."""
    device = _device(device)
    fams = _families(family_names, variants, implementations, shapes, device)
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first triton import
    t0 = time.perf_counter()
    checked = _run_checks(fams, device, variants, implementations, shapes, tier, jobs, click.echo)
    count = {status: [r.case for r in checked if r.status == status] for status in ("ok", "mismatch", "error")}
    click.echo(f"{len(count['ok'])} passed, {len(count['mismatch'])} mismatched, {len(count['error'])} errors "
               f"in {time.perf_counter() - t0:.0f}s")
    for status in ("mismatch", "error"):
        if count[status]:
            click.echo(f"{status}: " + " ".join(count[status]))
    if count["error"]:
        sys.exit(EXIT_BAD_INPUT)
    if count["mismatch"]:
        sys.exit(EXIT_FAIL)


def _machine_info(device):
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


def _follow_progress(process, log_path, t0):
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


@main.command()
@click.option("--bench", "-b", "bench", default=None, help="asv benchmark regex (shard the suite across runners).")
@click.option("--quick", is_flag=True,
              help="A first look: quick tier (headline shape), forward of the baseline's implementation and "
                   "of ours (Triton), one sample each; the reference's cost still shows as each case's speedup.")
@click.option("--tier", type=click.Choice(["quick", "default", "full"]), default="default", show_default=True,
              help=_tier_help)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda if a GPU is visible.")
@click.option("--commit", default="HEAD", show_default=True,
              help="Commit the results are recorded under; must be the one checked out.")
@click.option("--machine", "machine_override", default=None, help="asv machine name (default: the GPU model).")
@click.option("--shape", "shapes", multiple=True, help="Only these shapes (repeatable): one runner's shard.")
@click.option("--variant", "variants", multiple=True, help="Only these variants (repeatable).")
@click.option("--implementation", "implementations", multiple=True, help="Only these implementations.")
@click.option("--family", "family_names", multiple=True, help="Only these families (default: all).")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=None,
              help="Results folder (default: reports/results on CUDA; reports/quick-results for --quick; "
                   "reports/cpu-results on CPU).")
@click.option("--precheck/--no-precheck", default=True, show_default=True,
              help="On CUDA, first check every case on parallel workers (see `check`): a wrong kernel shows "
                   "in seconds, and the compile and autotune caches asv's one-process-per-benchmark setups "
                   "reuse are filled in parallel rather than one case at a time.")
@click.option("--repeat", type=click.IntRange(min=1), default=None,
              help="Samples per time benchmark (default: the suite's, 10); the gate's confirming re-runs take 20.")
def run(bench, quick, tier, device, commit, machine_override, shapes, variants, implementations, family_names,
        results_dir, precheck, repeat):
    """Run the suite with asv in the existing environment and record results under reports/results/.

    Every benchmark's setup checks its case against the reference before timing it. The machine's params
    carry the GPU model and the driver, CUDA, torch and triton versions, so results from different
    hardware or software are never compared. Prints a progress line per case, then a table of the
    forward figures."""
    from asv.machine import MachineCollection

    from variantbench import asvrun, results
    from variantbench.device import measured_peaks

    device = _device(device)
    fams = _families(family_names, variants, implementations, shapes, device)
    if quick:
        tier = "quick"
    fams = _families_with_cases(fams, device, variants, implementations, shapes, tier)
    sha = _sha(commit)
    # asv in the existing environment measures the code checked out here: recording it under another
    # commit would file HEAD's figures as BASE's and poison every later comparison.
    if sha != _sha("HEAD"):
        fail(f"--commit {commit} is not the checked-out commit ({_sha('HEAD')[:8]}): check it out first")
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        click.echo(f"variantbench: warning: uncommitted changes are measured but recorded under {sha[:8]}", err=True)
    name, info = _machine_info(device)
    name = machine_override or name
    info["machine"] = name
    MachineCollection.save(name, info)
    click.echo(f"machine {name}: {info['gpu']} driver {info['driver']} CUDA {info['cuda']} "
               f"torch {info['torch']} triton {info['triton']}; commit {sha[:8]}")
    peaks = measured_peaks(device)
    click.echo(f"measured peaks: {peaks['tflops']:.3g} TFLOP/s ({peaks['matmul']} matmul), {peaks['gbps']:.3g} GB/s copy")

    if quick:
        # A first look within minutes: every asv process prepares its case, and a FlexAttention one
        # compiles for 10-18 s on an H100 host; with Flex the quick grid took 214-273 s there.
        implementations = implementations or tuple(dict.fromkeys(
            i.name for fam in fams for i in fam.implementations if i.ours or i is fam.baseline[1]))
    env = dict(os.environ, VARIANTBENCH_DEVICE=device, VARIANTBENCH_TIER=tier,
               VARIANTBENCH_SHAPES=",".join(shapes), VARIANTBENCH_VARIANTS=",".join(variants),
               VARIANTBENCH_IMPLEMENTATIONS=",".join(implementations))
    # On the CPU our Triton kernels are checked through the interpreter (`check`, the tests) but not
    # timed: interpreter time is numpy emulation, ~1000x a GPU's and meaningless as a figure.
    env.pop("TRITON_INTERPRET", None)
    # CPU figures are a smoke run, not history: they go to reports/cpu-results/ (ignored), never into
    # reports/results/, the GPU history that `asv publish` renders.
    # Quick figures are one sample with no warmup: on the H100, a power-capped card, cuDNN's read 12%
    # under the 10-sample steady state (0.911 vs 1.03-1.05 ms, gqa_8 at llama-3-8b-s4k). They are a
    # first look, never history the gate compares: reports/quick-results/ (ignored).
    default_dir = "cpu-results" if device == "cpu" else ("quick-results" if quick else "results")
    results_dir = (results_dir or ROOT / "reports" / default_dir).resolve()
    # --record-samples keeps every sample, not only asv's summary: the gate tests on the samples.
    asv_args = ["--python=same", f"--set-commit-hash={sha}", f"--machine={name}", "--show-stderr", "--record-samples"]
    if quick:
        asv_args.append("--quick")
    if repeat:
        asv_args += ["--attribute", f"repeat={repeat}"]
    if shutil.which("asv") is None:
        fail("asv is not installed in this environment (pip install asv)")
    try:
        benchmarks = [b for b in asvrun.suite_benchmarks(ROOT) if not bench or re.search(bench, b)]
        benchmarks = [b for b in benchmarks if b.split(".")[0] in {f"bench_{fam.name}" for fam in fams}]
        if quick:  # forward figures only: a backward compile doubles a FlexAttention case's setup
            benchmarks = [b for b in benchmarks if not re.search(r"\.time_forward_backward$", b)]
    except re.error as error:
        fail(f"--bench {bench!r}: not a regular expression ({error})")
    if not benchmarks:
        fail(f"--bench {bench!r} matches no benchmark of the suite")
    t0 = time.perf_counter()
    if precheck and device == "cuda":
        _precheck(fams, device, variants, implementations, shapes, tier)
    with tempfile.TemporaryDirectory(prefix="variantbench-run-") as run_dir:
        env["VARIANTBENCH_RUN_DIR"] = run_dir
        code, path = asvrun.run_staged(
            ROOT, results_dir, name, sha, asv_args, benchmarks, env,
            follow=lambda process: _follow_progress(process, Path(run_dir) / "progress.log", t0),
        )
    click.echo(f"asv finished in {time.perf_counter() - t0:.0f}s with exit code {code}")
    if path is None:
        fail(f"asv wrote no results for {sha[:8]} on {name}")
    try:
        frame = results.load_file(path)
    except results.BadResults as why:
        fail(str(why))
    import pandas as pd

    pd.set_option("display.width", 200)
    for family_name, table in results.forward_tables(frame).items():
        click.echo(f"\n{family_name} forward, {device} figures ({_shown(path)}):")
        click.echo(table.to_string(float_format=lambda x: f"{x:.4g}"))
    if code != 0:
        fail(f"asv exited {code}: a benchmark failed or crashed (its message is in the log above); "
             f"the results of the others are in {_shown(path)}", EXIT_BAD_INPUT)


def _precheck(fams, device, variants, implementations, shapes, tier):
    """`check` the run's forwards side by side before asv times them one process at a time. On an
    H100 (edacf1b) asv spent 15-18 s preparing each FlexAttention case and 8-11 s each Triton one,
    most of it compiling and autotuning; after this precheck (10b2a5e, 45 s), 11-16 s and 4 s.
    Gradients are left to the forward+backward benchmarks' own setups: checking them here too took
    the precheck to 116 s on a cold H100 (fcd3149) and saved those setups only 4-6 s each.
    A failing case is named here and still goes to asv, whose setup fails it as a benchmark: the
    others are timed."""
    t0 = time.perf_counter()
    click.echo("prechecking every case on parallel workers (forwards; fills the compile caches the timed setups reuse)")
    checked = _run_checks(fams, device, variants, implementations, shapes, tier, None, click.echo,
                          failures_only=True, backward=False)
    bad = [r for r in checked if r.status != "ok"]
    click.echo(f"precheck: {len(checked) - len(bad)} ok, {len(bad)} failing in {time.perf_counter() - t0:.0f}s")


def _shown(path):
    """A path as a user reads it: relative to the checkout where it lies inside it."""
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _sha(rev):
    try:
        return subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError:
        fail(f"{rev}: not a commit of {ROOT}")


def _measure_args(bench, tier, shapes, variants, implementations, device, machine):
    """`variantbench run` options for measuring a commit that has no results."""
    args = ["--tier", tier]
    for flag, values in (("--shape", shapes), ("--variant", variants), ("--implementation", implementations)):
        for value in values:
            args += [flag, value]
    for flag, value in (("--bench", bench), ("--device", device), ("--machine", machine)):
        if value:
            args += [flag, value]
    return args


def _results_for(checkouts, sha, results_dir, measure_args):
    """(rows, identity) of a commit's results; measured first in its own checkout when it has none,
    unless measure_args is None (--no-run). Raises gate.Incomparable when there are still none."""
    from variantbench import gate

    try:
        return gate.commit_results(results_dir, sha)
    except gate.Incomparable:
        if measure_args is None:
            raise
    code = checkouts.run(sha, results_dir, measure_args, click.echo)
    try:
        return gate.commit_results(results_dir, sha)
    except gate.Incomparable:
        raise gate.Incomparable(f"measuring {sha[:8]} recorded no results (its run exited {code})") from None


def _base_and_head(checkouts, base, head, results_dir, measure_args):
    from variantbench import gate, results
    from variantbench.measure import MeasureFailed

    base_sha, head_sha = _sha(base), _sha(head)
    try:
        base_rows, base_identity = _results_for(checkouts, base_sha, results_dir, measure_args)
        head_rows, head_identity = _results_for(checkouts, head_sha, results_dir, measure_args)
        gate.check_identity(base_identity, head_identity)
    except gate.Incomparable as why:
        fail(str(why), EXIT_INCOMPARABLE)
    except MeasureFailed as why:
        fail(str(why))
    except results.BadResults as why:
        fail(str(why))
    return base_sha, head_sha, base_rows, head_rows, head_identity


def _measure_options(command, with_bench=True):
    """Options of compare, gate and bisect: what to measure for a commit with no results."""
    options = [
        click.option("--no-run", is_flag=True, help="Use only results already present; never measure."),
        *([click.option("--bench", "-b", default=None, help="Measuring: asv benchmark regex.")] if with_bench else []),
        click.option("--tier", type=click.Choice(["quick", "default", "full"]), default="default",
                     show_default=True, help="Measuring: " + _tier_help),
        click.option("--shape", "shapes", multiple=True, help="Measuring: only these shapes."),
        click.option("--variant", "variants", multiple=True, help="Measuring: only these variants."),
        click.option("--implementation", "implementations", multiple=True,
                     help="Measuring: only these implementations."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Measuring: the device."),
        click.option("--machine", default=None, help="Measuring: asv machine name."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


_results_option = click.option("--results", "results_dir", type=click.Path(path_type=Path),
                               default=ROOT / "reports" / "results", show_default=True, help="asv results folder.")


@main.command()
@click.argument("base")
@click.argument("head")
@_results_option
@_measure_options
def compare(base, head, results_dir, no_run, bench, tier, shapes, variants, implementations, device, machine):
    """Every timing benchmark present on BASE or HEAD: ratio, noise, significance and a verdict
    (faster, slower, same, noisy, new, gone, failed, skipped).

    A commit with no results is measured first, in its own git worktree by its own code (unless
    --no-run). Exits 0; 2 on bad input; 3 when the two were measured on different hardware or
    software, or one has no results."""
    from variantbench import gate
    from variantbench.measure import Checkouts

    settings = gate.load_settings(ROOT / "pyproject.toml")
    args = None if no_run else _measure_args(bench, tier, shapes, variants, implementations, device, machine)
    with Checkouts(ROOT) as checkouts:
        _, _, base_rows, head_rows, _ = _base_and_head(checkouts, base, head, results_dir, args)
    table = gate.compare_frames(base_rows, head_rows, settings.regression_factor)
    import pandas as pd

    pd.set_option("display.width", 220)
    click.echo(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


@main.command("gate")
@click.argument("base")
@click.argument("head")
@_results_option
@_measure_options
@click.option("--summary", "summary_path", type=click.Path(path_type=Path), default=None,
              help="Write a Markdown summary here (a GitHub job summary or PR comment).")
def gate_command(base, head, results_dir, no_run, bench, tier, shapes, variants, implementations, device, machine,
                 summary_path):
    """Fail (exit 1) when HEAD regressed against BASE or a variant is newly over its signal budget.

    A regression is slower than the factor ([tool.variantbench] regression_factor, default 1.10),
    significant after correcting for the number of benchmarks, and confirmed by re-running just the
    suspects on both commits (20 samples each, pooled with the first run's). With --no-run nothing is
    measured and no re-run can confirm, so suspects fail as they stand. Benchmarks too noisy for the
    factor are reported and do not gate. Variants already over budget on BASE are reported, not failed."""
    from variantbench import decide, gate, results
    from variantbench.measure import Checkouts, MeasureFailed

    try:
        settings = gate.load_settings(ROOT / "pyproject.toml")
    except results.BadResults as why:
        fail(str(why))
    args = None if no_run else _measure_args(bench, tier, shapes, variants, implementations, device, machine)
    with Checkouts(ROOT) as checkouts:
        base_sha, head_sha, base_rows, head_rows, identity = _base_and_head(checkouts, base, head, results_dir, args)
        verdicts = gate.compare_frames(base_rows, head_rows, settings.regression_factor)
        suspects = verdicts[verdicts.verdict == "slower"]
        if args is not None and not suspects.empty:
            click.echo(f"confirming {len(suspects)} suspect(s) with {decide.RERUN_SAMPLES} more samples on each commit")
            with tempfile.TemporaryDirectory(prefix="variantbench-confirm-") as rerun_dir:
                rerun_args = _confirm_args(suspects, device, machine)
                reruns = []
                for sha in (base_sha, head_sha):
                    try:
                        checkouts.run(sha, Path(rerun_dir), rerun_args, click.echo)
                        reruns.append(gate.commit_results(Path(rerun_dir), sha)[0])
                    except (gate.Incomparable, results.BadResults, MeasureFailed) as why:
                        click.echo(f"confirming on {sha[:8]} measured nothing ({why}): its suspects stay unconfirmed")
                        reruns.append(base_rows.iloc[0:0])
            verdicts = gate.confirm_frame(verdicts, base_rows, head_rows, *reruns, settings.regression_factor)
    budgets = gate.budget_frame(base_rows, head_rows, settings)
    text = gate.summary_markdown(base_sha, head_sha, identity, verdicts, budgets, settings.regression_factor)
    if summary_path:
        tmp = summary_path.with_suffix(summary_path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(summary_path)
    click.echo(text)
    if verdicts.verdict.isin(["slower", "failed"]).any() or budgets.new_over.any():
        sys.exit(EXIT_FAIL)


def _confirm_args(suspects, device, machine):
    """Run options measuring just the suspects (a superset where several differ in more than one
    parameter: shards are per name), with the re-run's sample count."""
    from variantbench import decide

    params = [p.split("/") for p in suspects.params]
    names = sorted(set(suspects.benchmark))
    args = ["--tier", "full", "--repeat", str(decide.RERUN_SAMPLES),
            "--bench", "|".join(rf"^{re.escape(n)}$" for n in names)]
    for flag, position in (("--variant", 0), ("--implementation", 1), ("--shape", 2)):
        for value in sorted({p[position] for p in params if len(p) > position}):
            args += [flag, value]
    for flag, value in (("--device", device), ("--machine", machine)):
        if value:
            args += [flag, value]
    return args


@main.command()
@_results_option
@click.option("--html", "html_dir", type=click.Path(path_type=Path), default=ROOT / "reports" / "html",
              show_default=True, help="Where the site goes.")
@click.option("--no-asv", is_flag=True, help="Only our summary page; skip `asv publish` of the per-benchmark history.")
def report(results_dir, html_dir, no_asv):
    """Write the static site: asv's published history and our summary page linking into it.

    The summary (HTML_DIR/variantbench/index.html), one section per machine, never mixed: per family,
    the latest commit's figures for every variant and implementation (ms, TFLOP/s, GB/s, % of roofline,
    ratio to baseline with its signal-budget verdict, speedup over the reference, error, peak memory),
    flagged ones first; plots of the ratios against the budget, of % of roofline, and of each forward's
    history with regressions marked. Opens from disk with no network. Exit 2 on bad or missing results."""
    from variantbench import gate, report as site, results

    try:
        settings = gate.load_settings(ROOT / "pyproject.toml")
        summary = site.build(ROOT, results_dir, html_dir, settings, with_asv=not no_asv)
    except (site.ReportError, results.BadResults) as why:
        fail(str(why))
    except OSError as why:  # an HTML folder that cannot be written
        fail(f"cannot write the report under {html_dir}: {why.strerror or why}")
    click.echo(f"summary: {_shown(summary)}")
    if not no_asv:
        click.echo(f"asv history: {_shown(html_dir / 'index.html')}")


@main.command()
@_results_option
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="A .csv or .parquet file (Parquet needs pyarrow).")
def export(results_dir, output):
    """Write every recorded result as one tidy table: a row per benchmark, parameter set, commit and
    machine, with the samples, the GPU and software identity and the commit's date."""
    from variantbench import report as site, results

    try:
        count = site.export(results_dir, output)
    except (site.ReportError, results.BadResults) as why:
        fail(str(why))
    except OSError as why:  # pandas names a missing folder in the message
        fail(f"cannot write {output}: {why}")
    click.echo(f"{count} rows to {output}")


@main.command("bisect")
@click.argument("good")
@click.argument("bad")
@click.option("--bench", "pattern", required=True,
              help="Regex on `benchmark(param, ...)`, as asv's --bench: e.g. 'time_forward.*gqa_8, triton'.")
@_results_option
@lambda command: _measure_options(command, with_bench=False)
def bisect_command(good, bad, pattern, results_dir, no_run, tier, shapes, variants, implementations, device, machine):
    """Find the commit between GOOD and BAD that made a benchmark slower.

    Searches the recorded results; unless --no-run, measures GOOD and BAD if they have none, then
    the middle one of the unmeasured commits between the last good and the first slower one, until
    none is left (each in its own worktree; narrow what is measured with --shape/--variant/...).
    Prints the first slower commit and the last good one. Exit 0 when found, 3 when GOOD or BAD has
    no results or BAD is not slower, 2 on bad input."""
    from variantbench import gate, results
    from variantbench.measure import Checkouts, MeasureFailed

    good_sha, bad_sha = _sha(good), _sha(bad)
    listed = subprocess.run(["git", "rev-list", "--reverse", "--ancestry-path", f"{good_sha}..{bad_sha}"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        fail(f"{bad} is not a descendant of {good}")
    commits = [good_sha] + listed.stdout.split()
    args = None if no_run else _measure_args(None, tier, shapes, variants, implementations, device, machine)
    try:
        settings = gate.load_settings(ROOT / "pyproject.toml")
        with Checkouts(ROOT) as checkouts:
            for sha in (good_sha, bad_sha):
                _results_for(checkouts, sha, results_dir, args)
            found = gate.bisect(results_dir, commits, pattern, settings.regression_factor)
            while args is not None and found["unmeasured"]:
                middle = found["unmeasured"][len(found["unmeasured"]) // 2]
                checkouts.run(middle, results_dir, args, click.echo)
                narrowed = gate.bisect(results_dir, commits, pattern, settings.regression_factor)
                if narrowed["unmeasured"] == found["unmeasured"]:  # it recorded nothing: stop, say so below
                    break
                found = narrowed
    except gate.Incomparable as why:
        fail(str(why), EXIT_INCOMPARABLE)
    except (results.BadResults, MeasureFailed) as why:
        fail(str(why))
    ratio = "crashed" if found["ratio"] is None else f"{found['ratio']:.3f}x"
    click.echo(f"first slower: {found['first_slower']}  {found['benchmark']}({', '.join(found['params'])}) {ratio}")
    click.echo(f"last good:    {found['last_good']}")
    if found["unmeasured"]:
        click.echo("unmeasured between them: " + " ".join(c[:8] for c in found["unmeasured"]))
