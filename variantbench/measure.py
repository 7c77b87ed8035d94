"""Measuring commits that have no results yet: each in its own git worktree, by its own harness.

asv builds every commit it measures; in an existing environment it cannot, so `compare`, `gate` and
`bisect` check the commit out beside this one (`git worktree add --detach`) and run that checkout's
`variantbench run` there, recording into this checkout's results folder. Each commit is measured by
its own suite, kernels and harness, exactly as a push to main would have measured it.
"""

import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path


class MeasureFailed(Exception):
    """A commit could not be measured (no worktree, or its run exited with an infrastructure error)."""


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
        echoed line by line. Exit 1 (a benchmark failed) still leaves the others' results; exit 2 or
        more means nothing usable was measured."""
        cmd = [sys.executable, "-m", "variantbench", "run", "--commit", sha, "--results", str(results_dir),
               *run_args]
        echo(f"measuring {sha[:8]}: variantbench run {' '.join(cmd[4:])}")
        with subprocess.Popen(cmd, cwd=self.path(sha), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as process:
            for line in process.stdout:
                echo(f"  {sha[:8]} | {line.rstrip()}")
        return process.returncode
