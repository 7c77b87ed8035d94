"""The `variantbench` command. Exit codes everywhere: 0 pass, 1 regression, mismatch or budget
exceeded, 2 bad input or infrastructure failure, 3 incomparable or no baseline.

The commands are thin: their shared options are variantbench.cli_options, running cases
variantbench.runner, measuring commits that lack the results compared variantbench.measure, deciding
variantbench.gate."""

import dataclasses
import subprocess
import sys
import traceback
from pathlib import Path

import click

from variantbench import gating, merging, runner, selecting
from variantbench.cli_options import factor_option, filter_options, measure_options, plugin_option, results_option
from variantbench.runner import EXIT_BAD_INPUT, EXIT_FAIL, ROOT, fail, sha, shown

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Benchmarks for LLM building blocks: is each fused kernel right, is each variant within the
    signal budget of its family's baseline, and did anything get slower.

    Exit codes: 0 pass, 1 mismatch/regression/over budget, 2 bad input or infrastructure failure,
    3 incomparable or no baseline."""


@main.command("list")
@plugin_option
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


@main.command()
@plugin_option
@filter_options("full")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Processes preparing cases side by side (default: half the cores, at most 8, on CUDA; 1 on "
                   "CPU). Autotuning kernels still run one at a time.")
def check(selection, jobs):
    """Check every implementation against its reference on fresh random inputs: the output on
    sampled rows, and, where the case has a backward, the gradients those rows give q, k and v.

    Prints one line per case (ok, MISMATCH, skip with its reason) as it finishes; exits 1 naming each
    mismatch, 2 if a case crashed."""
    from variantbench import checking

    checking.check(selection, jobs)


@main.command("try")
@plugin_option
@click.argument("variant")
@click.option("--against", default=None, metavar="A",
              help="Judge against this variant of the family, or FAMILY/VARIANT@SHAPE of another (MLA against "
                   "attention/gqa_8@llama-3-8b-s4k), through its fastest fused implementation (default: the family "
                   "baseline's).")
@click.option("--shape", "shapes", multiple=True,
              help="Shapes (repeatable; default: the family's headline shape on this device).")
@click.option("--json", "json_path", default=None, metavar="PATH|-",
              help="Also write the verdict as one JSON document (- for stdout; the tables then go to stderr).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="The device (default: cuda if a GPU is visible).")
def try_command(variant, against, shapes, json_path, device):
    """Is VARIANT (built in or a plug-in's) right, what does each implementation of it cost against A,
    and is its fastest fused one within the signal budget?

    Checks every implementation, a plug-in's candidate kernels too, against the float64 reference
    (and the gradients where it has a backward): a wrong one is named, never timed. Times each fused
    one side by side with A's in alternating blocks, as the suite's ratio to baseline, and prints a
    table per shape: ms, useful TFLOP/s, % roofline, cost per useful work and wall time against A,
    the standard error, the budget verdict, the max error. Exit 0 within budget, 1 over budget or
    wrong, 2 bad input or a crash, 3 no baseline (A has no fused implementation at a shape)."""
    from variantbench import trying

    trying.run(variant, against=against, shapes=shapes, json_path=json_path, device=device)


@main.command()
@plugin_option
@click.option("--bench", "-b", "bench", default=None,
              help="asv benchmark regex (shard the suite across runners); the power-state and timing-mode "
                   "tracks of the timings it selects come with them.")
@click.option("--quick", is_flag=True,
              help="A first look: quick tier (headline shape), forward of the baseline's implementation and "
                   "of ours (Triton), one sample each; the reference's cost still shows as each case's speedup. "
                   "On a CPU our Triton kernels run through the Triton interpreter (figures marked as such).")
@filter_options("default")
@click.option("--commit", default="HEAD", show_default=True,
              help="Commit the results are recorded under; must be the one checked out.")
@click.option("--machine", "machine", default=None, help="asv machine name (default: the GPU model).")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=None,
              help="Results folder (default: reports/results on CUDA; reports/quick-results for --quick; "
                   "reports/cpu-results on CPU).")
@click.option("--precheck/--no-precheck", default=True, show_default=True,
              help="On CUDA, first check every case on parallel workers (see `check`): a wrong kernel shows "
                   "in seconds, and the compile and autotune caches asv's one-process-per-benchmark setups "
                   "reuse are filled in parallel rather than one case at a time.")
@click.option("--repeat", type=click.IntRange(min=1), default=None,
              help="Samples per time benchmark (default: the suite's, 10); the gate's confirming re-runs take 20.")
def run(bench, quick, selection, commit, machine, results_dir, precheck, repeat):
    """Run the suite with asv in the existing environment and record results under reports/results/.

    Every benchmark's setup checks its case against the reference before timing it. The machine's params
    carry the GPU model and the driver, CUDA, cuDNN, NCCL, torch and triton versions, so results from
    different hardware or software are never compared. Prints a progress line per case, then a table of
    the forward figures (with the mean SM clock over each forward's samples, on a GPU). Exits 1 naming each kernel that disagrees with its reference (the others are
    still recorded), 2 when a benchmark crashed or asv failed."""
    runner.run(selection, bench=bench, quick=quick, commit=commit, machine=machine, results_dir=results_dir,
               precheck_first=precheck, repeat=repeat)


@main.command()
@plugin_option
@click.argument("base")
@click.argument("head")
@results_option
@factor_option
@measure_options()
def compare(base, head, results_dir, factor, no_run, bench, selection, machine):
    """Every timing benchmark of the selection present on BASE or HEAD: ratio, noise, significance and
    a verdict (faster, slower, same, noisy, new, gone, failed, skipped).

    A commit lacking the selection's results is measured first (as the gate's --help says; not with
    --no-run), in its own git worktree by its own code. Exits 0; 2 on bad input; 3 when the two were
    measured on different hardware or software (or several machines have results for both and
    --machine names none), or share no timing of the selection. base_mhz and head_mhz: the mean SM
    clock over each side's samples; between_run_sigma: the benchmark's run-to-run noise from the
    history's A/A pairs (aa_pairs of them), added to the samples' own (variantbench.noise)."""
    import pandas as pd

    from variantbench import gate, noise, results
    from variantbench.measure import Checkouts, measuring_args, measuring_exits

    args, wanted = measuring_args(no_run, bench, selection, machine), selecting.checked(selection, bench)
    with measuring_exits(), Checkouts(ROOT) as checkouts:
        settings = gate.load_settings(ROOT / "pyproject.toml", factor=factor)
        base_rows, head_rows, identity, notes = checkouts.compared(sha(base), sha(head), results_dir, args,
                                                                   click.echo, machine, wanted)
        calibration = noise.calibrate(results.load_history(results_dir), ROOT, identity, (sha(base), sha(head)))
    for note in notes:
        click.echo(f"note: {note}")
    table = gate.compare_frames(wanted.rows(base_rows, ROOT), wanted.rows(head_rows, ROOT), settings.regression_factor,
                                calibration)
    pd.set_option("display.width", 220)
    click.echo(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))


@main.command("gate")
@plugin_option
@click.argument("base")
@click.argument("head")
@results_option
@factor_option
@measure_options()
@click.option("--summary", "summary_path", type=click.Path(path_type=Path), default=None,
              help="Write a Markdown summary here (a GitHub job summary or PR comment), also when the gate "
                   "cannot decide (exit 2 or 3): then it says why.")
def gate_command(base, head, results_dir, factor, no_run, bench, selection, machine, summary_path):
    """Fail (exit 1) when HEAD regressed against BASE or a variant is newly over its signal budget.

    A regression is slower than the factor (--factor, else [tool.variantbench] regression_factor, 1.10),
    significant after correcting for the number of benchmarks, and confirmed by re-running just the
    suspects on both commits (20 samples each, pooled with the first run's). With --no-run nothing is
    measured and no re-run can confirm, so suspects fail as they stand. Benchmarks too noisy for the
    factor are reported and do not gate. Variants already over budget on BASE are reported, not failed.
    The summary states the SM clocks each side ran at, and notes where they differ by more than 3%.
    Results already in --results count only in the rows --bench and the filters select: a commit lacking
    timings of the selection that the other holds is measured for just those (both, where neither holds
    any) into that folder first, which keeps what it held; with --no-run the summary says what one
    lacks. Two commits sharing no timing of the selection are exit 3. The signal budget is judged on the
    selection's families, variants and shapes, whatever --bench and --implementation say."""
    from variantbench.measure import measuring_args

    if summary_path is not None and not summary_path.parent.is_dir():
        fail(f"--summary {summary_path}: no folder {summary_path.parent} to write it in")
    try:
        args, wanted = measuring_args(no_run, bench, selection, machine), selecting.checked(selection, bench)
        text, failing = gating.run_gate(sha(base), sha(head), results_dir, args, selection.device, machine,
                                        factor=factor, wanted=wanted)
    except runner.Failed as stop:
        gating.write_summary(summary_path, gating.not_gated(base, head, stop.code, stop.message), quiet=True)
        raise
    except Exception as error:  # a bug must not read as exit 1, "regression"; CI shows the summary
        traceback.print_exc()
        message = f"internal error: {type(error).__name__}: {error}"
        gating.write_summary(summary_path, gating.not_gated(base, head, EXIT_BAD_INPUT, message), quiet=True)
        fail(message)
    click.echo(text)
    gating.write_summary(summary_path, text)
    if failing:
        sys.exit(EXIT_FAIL)


@main.command()
@plugin_option
@results_option
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
    click.echo(f"summary: {shown(summary)}")
    if not no_asv:
        click.echo(f"asv history: {shown(html_dir / 'index.html')}")


@main.command()
@plugin_option
@results_option
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
@plugin_option
@click.argument("good")
@click.argument("bad")
@click.option("--bench", "-b", "pattern", required=True,
              help="Regex on `benchmark(variant, implementation, shape)` as this command prints it, unquoted: "
                   "e.g. 'time_forward.*softcap_50, triton' (not asv's --bench form, which quotes them).")
@results_option
@factor_option
@measure_options(selecting=False)
def bisect_command(good, bad, pattern, results_dir, factor, no_run, selection, machine):
    """Find the commit between GOOD and BAD that made a benchmark slower.

    Searches the recorded results; unless --no-run, measures GOOD and BAD if they have none, then
    the middle one of the unmeasured commits between the last good and the first slower one, until
    none is left (each in its own worktree; narrow what is measured with --shape/--variant/...).
    A benchmark that failed (asv recorded no figure: a crash or a mismatch) counts as slower; one
    skipped there does not. Prints the first slower commit and the last good one. Exit 0 when found,
    3 when GOOD or BAD has no results or BAD is not slower, 2 on bad input."""
    from variantbench import gate
    from variantbench.measure import Checkouts, measuring_args, measuring_exits

    good_sha, bad_sha = sha(good), sha(bad)
    listed = subprocess.run(["git", "rev-list", "--reverse", "--ancestry-path", f"{good_sha}..{bad_sha}"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        fail(f"{bad} is not a descendant of {good}")
    commits = [good_sha] + listed.stdout.split()
    args = measuring_args(no_run, None, selection, machine)
    with measuring_exits(), Checkouts(ROOT) as checkouts:
        settings = gate.load_settings(ROOT / "pyproject.toml", factor=factor)
        machine = machine or gate.shared_machine(results_dir, (good_sha, bad_sha))
        for commit in (good_sha, bad_sha):
            checkouts.results_for(commit, results_dir, args, click.echo, machine)
        found = gate.bisect(results_dir, commits, pattern, settings.regression_factor, machine)
        while args is not None and found["unmeasured"]:
            middle = found["unmeasured"][len(found["unmeasured"]) // 2]
            checkouts.run(middle, results_dir, args, click.echo)
            narrowed = gate.bisect(results_dir, commits, pattern, settings.regression_factor, machine)
            if narrowed["unmeasured"] == found["unmeasured"]:  # it recorded nothing: stop, say so below
                break
            found = narrowed
    ratio = "failed (no figure: a crash or a mismatch)" if found["ratio"] is None else f"{found['ratio']:.3f}x"
    click.echo(f"first slower: {found['first_slower']}  {found['benchmark']}({', '.join(found['params'])}) {ratio}")
    click.echo(f"last good:    {found['last_good']}")
    if found["unmeasured"]:
        click.echo("unmeasured between them: " + " ".join(c[:8] for c in found["unmeasured"]))


main.add_command(merging.merge_command)  # its own module: one story, the shards' join
