"""Measuring commits that lack the results a command compares: each in its own git worktree, by its
own harness.

asv builds every commit it measures; in an existing environment it cannot, so `compare`, `gate` and
`bisect` check the commit out beside this one (`git worktree add --detach`) and run that checkout's
`variantbench run` there, recording into this checkout's results folder. Each commit is measured by
its own suite, kernels and harness, exactly as a push to main would have measured it.
"""

import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from variantbench.selecting import EVERY_ROW


class MeasureFailed(Exception):
    """A commit could not be measured (no worktree, or its run exited with an infrastructure error)."""


@contextmanager
def measuring_exits():
    """compare, gate and bisect: results that cannot be compared (different machines, none) are exit
    3; a commit that cannot be measured, damaged results or a broken pattern, one line and exit 2."""
    from variantbench import gate, results
    from variantbench.runner import EXIT_INCOMPARABLE, fail

    try:
        yield
    except gate.Incomparable as why:
        fail(str(why), EXIT_INCOMPARABLE)
    except (MeasureFailed, results.BadResults) as why:
        fail(str(why))
    except re.error as why:
        fail(f"--bench {why.pattern!r}: not a regular expression ({why})")


def measuring_args(no_run, bench, selection, machine):
    """`variantbench run` options measuring a commit that lacks the selected results; None with --no-run."""
    if no_run:
        return None
    return selection.run_args() + [arg for flag, value in (("--bench", bench), ("--machine", machine)) if value
                                   for arg in (flag, value)]


@contextmanager
def worktree(root: Path, sha: str):
    """A detached checkout of `sha` in a temporary folder, removed afterwards (even on a kill of
    this process's Python code; a SIGKILL leaves it to `git worktree prune`)."""
    folder = Path(tempfile.mkdtemp(prefix=f"variantbench-{sha[:8]}-"))
    path = folder / "checkout"
    added = subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=root,
                           capture_output=True, text=True)
    if added.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise MeasureFailed(f"cannot check out {sha[:8]}: {added.stderr.strip().splitlines()[-1:]}")
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=root, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


class Checkouts:
    """Worktrees of the commits a command measures, each made once and removed on exit."""

    def __init__(self, root: Path):
        self.root = root
        self._stack = ExitStack()
        self._paths = {}

    def __enter__(self):
        from variantbench.asvrun import exit_on_sigterm

        # a SIGTERM (a CI timeout) still stops the measuring run and removes the worktrees
        self._stack.enter_context(exit_on_sigterm())
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False

    def path(self, sha):
        if sha not in self._paths:
            self._paths[sha] = self._stack.enter_context(worktree(self.root, sha))
        return self._paths[sha]

    def run(self, sha, results_dir: Path, run_args, echo):
        """`variantbench run --commit sha --results results_dir RUN_ARGS` in sha's checkout, its output
        echoed line by line; returns its exit code. A run that exits 1 (a kernel mismatch) or 2 (a
        benchmark crashed) still records the others' results: callers read the results folder. A
        kill of this process stops the run (which then stops its asv and removes its staging). The run's
        working directory is sha's checkout, so a relative results folder is made absolute here: else
        its results land inside that worktree and are removed with it (a 625 s H200 run lost so)."""
        cmd = [sys.executable, "-m", "variantbench", "run", "--commit", sha, "--results", str(Path(results_dir).resolve()),
               *run_args]
        echo(f"measuring {sha[:8]}: variantbench run {' '.join(cmd[4:])}")
        started = time.monotonic()
        with subprocess.Popen(cmd, cwd=self.path(sha), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as process:
            try:
                for line in process.stdout:
                    echo(f"  {sha[:8]} | {line.rstrip()}")
            except BaseException:
                process.terminate()  # the run stops its asv and removes its staging (asvrun)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise
        echo(f"measured {sha[:8]}: exit {process.returncode} in {time.monotonic() - started:.0f} s")
        return process.returncode

    def results_for(self, sha, results_dir: Path, run_args, echo, machine=None, wanted=EVERY_ROW):
        """(rows, identity) of a commit's results on `machine` (None: the one machine that has them),
        the rows `wanted` selects (selecting.RowSelection); measured first in its own checkout where
        there are none of them, or where --bench names a timed benchmark they hold none of (then only
        those are measured), unless run_args is None (--no-run). Raises gate.NoResults when there are
        still none of them, gate.Incomparable when several machines have them.

        Measuring records into the folder that holds the commit's earlier results, and keeps them:
        asv's `Run.run` (asv/commands/run.py, asv 0.6) calls `Results.load_data` (asv/results.py) on the
        commit's file before running, and `Results.save` writes back every benchmark it loaded, the
        ones it ran replaced; `variantbench run` stages a copy of that file for asv (asvrun.run_staged)
        and publishes each benchmark's newest figures joined with the file as it is then
        (asvrun.newest_of). A forward-only folder measured for the backward keeps its forwards."""
        from variantbench import gate

        try:
            rows, identity = gate.commit_results(results_dir, sha, machine)
        except gate.NoResults:
            if run_args is None:
                raise
        else:
            selected = wanted.rows(rows, self.root)
            unrecorded = wanted.unrecorded(selected, self.root)
            if wanted.everything or not (selected.empty or unrecorded):
                return selected, identity
            if run_args is None:  # --no-run: compared as held, where it holds some of the selection
                if selected.empty:
                    raise gate.NoResults(f"{sha[:8]} has no results of the selection {wanted} under {results_dir}"
                                         + (f" on {machine}" if machine else "") + " (measure it: leave out --no-run)")
                return selected, identity
            if not selected.empty:
                run_args = measuring_only(run_args, unrecorded)
        code = self.run(sha, results_dir, run_args, echo)
        try:
            rows, identity = gate.commit_results(results_dir, sha, machine)
        except gate.NoResults:
            raise gate.NoResults(f"measuring {sha[:8]} recorded no results (its run exited {code})") from None
        selected = wanted.rows(rows, self.root)
        if selected.empty and not wanted.everything:
            raise gate.NoResults(f"measuring {sha[:8]} recorded no results of the selection {wanted} "
                                 f"(its run exited {code})")
        return selected, identity

    def compared(self, base_sha, head_sha, results_dir: Path, run_args, echo, machine=None, wanted=EVERY_ROW):
        """(BASE's rows, HEAD's rows, the identity they share, notes on it): the rows `wanted` selects,
        on `machine`, or where none is named on the one machine with results for both
        (gate.shared_machine); each measured first where it lacks them (see `results_for`). Raises
        gate.Incomparable when their identities differ, or several machines have results for both."""
        from variantbench import gate

        machine = machine or gate.shared_machine(results_dir, (base_sha, head_sha))
        base_rows, base_identity = self.results_for(base_sha, results_dir, run_args, echo, machine, wanted)
        head_rows, head_identity = self.results_for(head_sha, results_dir, run_args, echo, machine, wanted)
        return base_rows, head_rows, *gate.check_identity(base_identity, head_identity)


def measuring_only(run_args, benchmarks):
    """`run_args` (with a --bench, as `measuring_args` makes them) narrowed to `benchmarks` (asv
    names): their --bench replaced by one naming just those, the filters kept; so what a commit's
    results hold already is not measured again (a default tier's asv run took 481 s on an H100)."""
    at = run_args.index("--bench")
    return [*run_args[:at], *run_args[at + 2:], "--bench", "|".join(rf"^{re.escape(n)}$" for n in benchmarks)]


def confirm_args(suspects, device, machine):
    """`variantbench run` options measuring just the gate's suspects (a superset where several differ
    in more than one parameter: shards are per name), with the re-run's sample count."""
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
