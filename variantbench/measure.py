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

from variantbench.selecting import EVERY_ROW, timing_keys


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

    def results_for(self, sha, results_dir: Path, run_args, echo, machine=None):
        """(rows, identity) of a commit's results on `machine` (None: the one machine that has them);
        measured first in its own checkout when there are none, unless run_args is None (--no-run).
        Raises gate.NoResults when there are still none, gate.Incomparable when several machines have them."""
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

    def compared(self, base_sha, head_sha, results_dir: Path, run_args, echo, machine=None, wanted=EVERY_ROW):
        """(BASE's rows, HEAD's rows, the identity they share, notes): every row of each commit's results
        on `machine`, or where none is named on the one machine with results for both
        (gate.shared_machine); the caller picks the rows `wanted` selects. With no selection a commit is
        measured first where it has no results at all (`results_for`), as before there were selections;
        with one, where it lacks timings of the selection that the other holds (`_selected`). Raises
        gate.NoResults where the two share no timing of the selection (nothing compared is no pass: a
        gate of disjoint rows read "gone 12, new 2" and exit 0), gate.Incomparable where their
        identities differ or several machines have results for both."""
        from variantbench import gate

        commits = (base_sha, head_sha)
        on = machine or gate.shared_machine(results_dir, commits)
        if wanted.everything:
            sides, notes = [self.results_for(c, results_dir, run_args, echo, on) for c in commits], []
        else:
            sides, notes = self._selected(commits, results_dir, run_args, echo, on, wanted)
        (base_rows, base_identity), (head_rows, head_identity) = sides
        identity, identity_notes = gate.check_identity(base_identity, head_identity)
        base_keys, head_keys = (self._timings(side, wanted) for side in sides)
        if not base_keys & head_keys:
            raise gate.NoResults(f"{base_sha[:8]} and {head_sha[:8]} share no timing"
                                 + (f" of the selection {wanted}" if not wanted.everything else "")
                                 + f" under {results_dir}" + (f" on {on}" if on else "")
                                 + (" (measure them: leave out --no-run)" if run_args is None else ""))
        return base_rows, head_rows, identity, identity_notes + notes + self._unheld(wanted, base_keys, head_keys)

    def _selected(self, commits, results_dir: Path, run_args, echo, on, wanted):
        """([(rows, identity)] of each commit, notes): each measured first where it lacks timings of the
        selection that the other holds (just their benchmarks, under the user's other filters), both
        with the run args as given where neither holds any; with --no-run (run_args None) as held,
        with a note on what one lacks. Demanding only what the other side holds leaves alone what no
        run records: a benchmark new in HEAD when measuring BASE, a family with no case on this device
        (the collectives on one GPU), one the names drop; demanded, each started a run that exited 2."""
        from variantbench import gate

        if run_args is None:  # a commit with no results at all is gate.NoResults, exit 3
            held = {c: gate.commit_results(results_dir, c, on) for c in commits}
            return [held[c] for c in commits], _unmeasured(commits, {c: self._timings(held[c], wanted)
                                                                     for c in commits})
        held = {c: _held(results_dir, c, on) for c in commits}
        demands = _demands(commits, {c: self._timings(side, wanted) for c, side in held.items()}, run_args)
        for commit, (args, _) in demands.items():  # every one before any run: a refusal wastes none
            _check_recording_machine(commit, on or (held[commit][1]["machine"] if held[commit] else None), args)
        for commit, (args, adding) in demands.items():
            held[commit] = self._measured(commit, results_dir, args, echo, on, wanted, adding)
        return [held[c] for c in commits], []  # BASE may be HEAD (an A/A gate): measured once

    def _unheld(self, wanted, *keys) -> list[str]:
        """A note naming the timings --bench names (in this checkout's suite) that neither commit holds:
        they are not measured where the two share others (demanding them would start runs that record
        nothing where no case runs here, the collectives on one GPU), so the gate must say it left them out."""
        from variantbench import asvrun
        from variantbench.selecting import TIMED, benchmarks_named

        if not wanted.bench:
            return []
        held = {benchmark for side in keys for benchmark, _ in side}
        unheld = [name for name in benchmarks_named(asvrun.suite_benchmarks(self.root), wanted.bench, wanted.families)
                  if TIMED in name and name not in held]
        return [f"Neither commit holds {', '.join(unheld)}, which --bench names: not measured, not compared "
                f"(gate them alone to measure them)."] if unheld else []

    def _measured(self, sha, results_dir: Path, run_args, echo, machine, wanted, adding):
        """(rows, identity) of `sha` on `machine` after a run of `run_args` that is to add the timing
        keys `adding` (None: any timing of `wanted`). Raises MeasureFailed where the run exited
        non-zero without recording them (an exit 0 without them: they are not in that commit's suite,
        and read new or gone), gate.NoResults where it recorded nothing at all.

        Measuring records into the folder that holds the commit's earlier results, and keeps them:
        asv's `Run.run` (asv/commands/run.py, asv 0.6) calls `Results.load_data` (asv/results.py) on the
        commit's file before running, and `Results.save` writes back every benchmark it loaded, the
        ones it ran replaced; `variantbench run` stages a copy of that file for asv (asvrun.run_staged)
        and publishes each benchmark's newest figures joined with the file as it is then
        (asvrun.newest_of). A forward-only folder measured for the backward keeps its forwards."""
        from variantbench import gate

        code = self.run(sha, results_dir, run_args, echo)
        side = _held(results_dir, sha, machine)
        recorded = self._timings(side, wanted)
        if code != 0 and (adding - recorded if adding is not None else not recorded):
            what = (", ".join(sorted({benchmark for benchmark, _ in adding - recorded})) if adding is not None
                    else f"any timing of the selection {wanted}")
            raise MeasureFailed(f"measuring {sha[:8]} exited {code} without recording {what}")
        if side is None:
            raise gate.NoResults(f"measuring {sha[:8]} recorded no results (its run exited {code})")
        return side

    def _timings(self, side, wanted) -> set:
        """The timing keys (benchmark, params) `wanted` selects of a commit's (rows, identity); none where
        it has no results (None)."""
        return set() if side is None else timing_keys(wanted.rows(side[0], self.root))


def _held(results_dir: Path, sha, machine):
    """(rows, identity) of a commit's results on `machine`; None where it has none."""
    from variantbench import gate

    try:
        return gate.commit_results(results_dir, sha, machine)
    except gate.NoResults:
        return None


def _demands(commits, keys, run_args) -> dict:
    """{commit: (its run args, the timing keys its run is to add; None: any of the selection)}: each
    commit lacking timings the other holds (`keys`, each commit's), its run narrowed to their
    benchmarks; both, with the run args as given, where neither holds any."""
    base, head = commits
    if not keys[base] and not keys[head]:
        return {commit: (run_args, None) for commit in commits}
    lacking = {base: keys[head] - keys[base], head: keys[base] - keys[head]}
    return {commit: (measuring_only(run_args, sorted({benchmark for benchmark, _ in adding})), adding)
            for commit, adding in lacking.items() if adding}


def _unmeasured(commits, keys) -> list[str]:
    """With --no-run, a note per commit lacking timings of the selection the other holds (`keys`)."""
    base, head = commits
    return [f"{side} lacks {len(lacking)} timing(s) of the selection that {other} holds; with --no-run none was "
            f"measured, so they read {verdict}."
            for side, other, lacking, verdict in (("BASE", "HEAD", keys[head] - keys[base], "new"),
                                                  ("HEAD", "BASE", keys[base] - keys[head], "gone")) if lacking]


def recording_machine(run_args) -> str:
    """The asv machine `variantbench run RUN_ARGS` records under: its --machine, else this machine's
    own name for its --device (runner.machine_info, as the run names it)."""
    from variantbench.device import default_device
    from variantbench.runner import machine_info

    if "--machine" in run_args:
        return run_args[run_args.index("--machine") + 1]
    return machine_info(run_args[run_args.index("--device") + 1] if "--device" in run_args else default_device())[0]


def _check_recording_machine(sha, compared_on, run_args):
    """MeasureFailed (exit 2) where a run of `run_args` would record `sha` under another machine than
    the one its results are compared on (`compared_on`, inferred): its figures would never be read
    (results under `lane1`, a gate measured the backward under the GPU's name and passed on the rest)."""
    if compared_on is None:  # no results to compare it on yet: whatever the run records is read
        return
    recording = recording_machine(run_args)
    if compared_on != recording:
        raise MeasureFailed(f"{sha[:8]}'s results are compared on machine {compared_on}, but measuring it records "
                            f"under {recording}: pass --machine {compared_on} to measure into it, or --no-run")


def measuring_only(run_args, benchmarks):
    """`run_args` (as `measuring_args` makes them) narrowed to `benchmarks` (asv names): any --bench
    replaced by one naming just those, the other filters kept; so what a commit's results hold already
    is not measured again (a default tier's asv run took 481 s on an H100)."""
    at = run_args.index("--bench") if "--bench" in run_args else len(run_args)
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
