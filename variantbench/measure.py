"""Measuring commits that have no results yet: each in its own git worktree, by its own harness.

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
    """`variantbench run` options measuring a commit with no results; None with --no-run."""
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

    def results_for(self, sha, results_dir: Path, run_args, echo, machine=None):
        """(rows, identity) of a commit's results on `machine` (None: the one machine that has them);
        measured first in its own checkout when there are none, unless run_args is None (--no-run).
        Raises gate.Incomparable when there are still none, or several machines have them."""
        from variantbench import gate

        try:
            return gate.commit_results(results_dir, sha, machine)
        except gate.NoResults:
            if run_args is None:
                raise
        code = self.run(sha, results_dir, run_args, echo)
        try:
            return gate.commit_results(results_dir, sha, machine)
        except gate.NoResults:
            raise gate.NoResults(f"measuring {sha[:8]} recorded no results (its run exited {code})") from None

    def compared(self, base_sha, head_sha, results_dir: Path, run_args, echo, machine=None):
        """(BASE's rows, HEAD's rows, the identity they share, notes on it), on `machine`, or where
        none is named on the one machine with results for both (gate.shared_machine); each measured
        first where it has no results (see `results_for`). Raises gate.Incomparable when their
        identities differ, or several machines have results for both."""
        from variantbench import gate

        machine = machine or gate.shared_machine(results_dir, (base_sha, head_sha))
        base_rows, base_identity = self.results_for(base_sha, results_dir, run_args, echo, machine)
        head_rows, head_identity = self.results_for(head_sha, results_dir, run_args, echo, machine)
        return base_rows, head_rows, *gate.check_identity(base_identity, head_identity)


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
