"""`variantbench check`, and the precheck of `variantbench run`: every selected case prepared and
checked against its float64 reference on parallel workers, one line each, and an exit code that
tells a wrong kernel (1) from a crash (2)."""

import collections
import os
import time

import click

from variantbench.runner import EXIT_BAD_INPUT, EXIT_FAIL, resolve


def default_jobs():
    # Half the cores: a FlexAttention compile runs its own Triton compile threads.
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def run_checks(fams, selection, jobs, echo, failures_only=False, backward=True):
    """Check every case of the selection; echo one line each (skips too), or only those that fail.
    Returns the CheckResults."""
    from variantbench import check_workers

    runnable = []
    for fam in fams:
        for case in selection.cases(fam):
            if isinstance(case, tuple):
                if not failures_only:
                    echo(f"skip      {'/'.join(case[:4])}: {case[4]}")
            else:
                runnable.append(case)
    if jobs is None:
        jobs = default_jobs() if selection.device == "cuda" else 1
    t0 = time.perf_counter()
    count = len(runnable)

    def report(result):
        report.done += 1
        if result.status != "ok" or not failures_only:
            echo(f"[{report.done}/{count} {time.perf_counter() - t0:4.0f}s] {result.line}")

    report.done = 0
    return check_workers.check_many(runnable, jobs, report, backward)


def check(selection, jobs):
    """`variantbench check` (see its --help): a line per case, a count; exits 1 naming each mismatch,
    2 if a case crashed."""
    selection, fams = resolve(selection)
    if selection.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first triton import
    t0 = time.perf_counter()
    checked = run_checks(fams, selection, jobs, click.echo)
    count = {status: [r.case for r in checked if r.status == status] for status in ("ok", "mismatch", "error")}
    click.echo(f"{len(count['ok'])} passed, {len(count['mismatch'])} mismatched, {len(count['error'])} errors "
               f"in {time.perf_counter() - t0:.0f}s")
    for status in ("mismatch", "error"):
        if count[status]:
            click.echo(f"{status}: " + " ".join(count[status]))
    if count["error"]:
        raise SystemExit(EXIT_BAD_INPUT)
    if count["mismatch"]:
        raise SystemExit(EXIT_FAIL)


def precheck(fams, selection, run_dir):
    """`check` the run's forwards side by side before asv times them one process at a time. On an
    H100 (edacf1b) asv spent 15-18 s preparing each FlexAttention case and 8-11 s each Triton one,
    most of it compiling and autotuning; after this precheck (10b2a5e, 45 s), 11-16 s and 4 s.
    Gradients are left to the forward+backward benchmarks' own setups: checking them here too took
    the precheck to 116 s on a cold H100 (fcd3149) and saved those setups only 4-6 s each.
    A failing case is named here and still goes to asv, whose setup fails it as a benchmark: the
    others are timed. A case whose prepare finds it cannot run (Flex refusing MLA's absorbed decode)
    is a skip, remembered in the run's memos so that none of its benchmarks tries again
    (metrics.remember_unsupported). Returns the CheckResults (which cases mismatched, for the exit code)."""
    from variantbench import metrics

    t0 = time.perf_counter()
    click.echo("prechecking every case on parallel workers (forwards; fills the compile caches the timed setups reuse)")
    checked = run_checks(fams, selection, None, click.echo, failures_only=True, backward=False)
    for result in checked:
        if result.unpreparable:
            metrics.remember_unsupported(result.case, result.unpreparable, run_dir)
    counts = collections.Counter("ok" if r.status == "ok" else "skipped" if r.status == "skip" else "failing"
                                 for r in checked)
    click.echo(f"precheck: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failing']} failing "
               f"in {time.perf_counter() - t0:.0f}s")
    return checked
