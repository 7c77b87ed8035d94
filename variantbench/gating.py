"""The gate as a command: the selected results of BASE and HEAD (measured in their own worktrees
where missing), regression suspects confirmed by re-running them on both commits, variants newly
over budget confirmed by re-running their ratios on HEAD, and the Markdown summary."""

import re
import tempfile
from pathlib import Path

import click

from variantbench import budget
from variantbench.runner import EXIT_BAD_INPUT, EXIT_INCOMPARABLE, ROOT, fail
from variantbench.selecting import EVERY_ROW


def run_gate(base_sha, head_sha, results_dir, run_args, device, machine, echo=click.echo, factor=None,
             wanted=EVERY_ROW):
    """(the gate's Markdown summary, whether it fails): regressions over the rows `wanted` selects
    (selecting.RowSelection), the signal budget over those of its families, variants and shapes
    (RowSelection.budgeted)."""
    from variantbench import decide, gate, noise, results
    from variantbench.measure import Checkouts, MeasureFailed, confirm_args, measuring_exits

    with measuring_exits(), Checkouts(ROOT) as checkouts:
        settings = gate.load_settings(ROOT / "pyproject.toml", factor=factor)
        base_held, head_held, identity, notes = checkouts.compared(base_sha, head_sha, results_dir, run_args,
                                                                   echo, machine, wanted)
        base_rows, head_rows = (wanted.rows(rows, ROOT) for rows in (base_held, head_held))
        base_budget, head_budget = (wanted.budgeted().rows(rows, ROOT) for rows in (base_held, head_held))
        # Each benchmark's between-run noise from the history's A/A pairs (variantbench.noise), never
        # from this BASE/HEAD pair itself; screen wide only where a confirming re-run follows.
        calibration = noise.calibrate(results.load_history(results_dir), ROOT, identity, (base_sha, head_sha))
        verdicts = gate.compare_frames(base_rows, head_rows, settings.regression_factor, calibration,
                                       screen=run_args is not None)
        suspects = verdicts[verdicts.verdict == "slower"]
        if run_args is not None and not suspects.empty:
            echo(f"confirming {len(suspects)} suspect(s) with {decide.RERUN_SAMPLES} more samples on each commit")
            with tempfile.TemporaryDirectory(prefix="variantbench-confirm-") as rerun_dir:
                rerun_args = confirm_args(suspects, device, machine)
                reruns = []
                for commit in (base_sha, head_sha):
                    try:
                        checkouts.run(commit, Path(rerun_dir), rerun_args, echo)
                        reruns.append(gate.commit_results(Path(rerun_dir), commit)[0])
                    except (gate.Incomparable, results.BadResults, MeasureFailed) as why:
                        echo(f"confirming on {commit[:8]} measured nothing ({why}): its suspects stay unconfirmed")
                        reruns.append(base_rows.iloc[0:0])
            verdicts = gate.confirm_frame(verdicts, base_rows, head_rows, *reruns, settings.regression_factor)
        head_cases = budget.case_frame(head_budget, settings.budget_for)
        head_variants = budget.variant_frame(head_cases)
        over = budget.newly_over(budget.variant_frame(budget.case_frame(base_budget, settings.budget_for)),
                                 head_variants)
        if run_args is not None and not over.empty:
            over = confirm_budget(checkouts, head_sha, head_budget, head_cases, over, settings, device, machine, echo)
    budget_lines = budget.gate_markdown(head_variants, over, str(wanted.budgeted()))
    text = gate.summary_markdown(base_sha, head_sha, identity, verdicts, budget_lines, settings.regression_factor,
                                 notes, gate.power_notes(verdicts, base_rows, head_rows))
    return text, bool(verdicts.verdict.isin(["slower", "failed"]).any() or not budget.failing(over).empty)


def confirm_budget(checkouts, head_sha, head_rows, head_cases, over, settings, device, machine, echo):
    """Variants newly over budget, decided again with a re-run of their ratios on HEAD (variantbench.budget)."""
    from variantbench import gate, results
    from variantbench.measure import MeasureFailed

    echo(f"confirming {len(over)} variant(s) newly over budget with a re-run of their ratios on {head_sha[:8]}")
    args = ["--tier", "full", "--bench", "|".join(rf"^{re.escape(n)}$" for n in budget.rerun_benchmarks(head_rows, over))]
    for flag, values in (("--variant", over.variant), ("--shape", over["shape"])):
        for value in sorted(set(values)):
            args += [flag, value]
    args += [arg for flag, value in (("--device", device), ("--machine", machine)) if value for arg in (flag, value)]
    with tempfile.TemporaryDirectory(prefix="variantbench-budget-") as rerun_dir:
        try:
            checkouts.run(head_sha, Path(rerun_dir), args, echo)
            again = budget.case_frame(gate.commit_results(Path(rerun_dir), head_sha)[0], settings.budget_for)
        except (gate.Incomparable, results.BadResults, MeasureFailed) as why:
            echo(f"the budget re-run measured nothing ({why}): its variants stay over, unconfirmed")
            again = head_cases.iloc[0:0]
    return budget.confirm(head_cases, again, over)


def not_gated(base, head, code, message):
    """The summary of a gate that could not decide: CI shows it where the PR's reviewers look."""
    meaning = {EXIT_BAD_INPUT: "bad input or infrastructure failure",
               EXIT_INCOMPARABLE: "incomparable or no baseline"}.get(code, "not decided")
    return (f"## variantbench gate: {head} against {base} not gated (exit {code}: {meaning})\n\n"
            f"{message}\n")


def write_summary(path, text, quiet=False):
    """Write the summary file atomically (where asked for); a file that cannot be written is one line
    and exit 2, or, with `quiet` (already failing for another reason), nothing more."""
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as why:
        if not quiet:
            fail(f"cannot write the summary {path}: {why.strerror or why}")
