r"""The rows compare and gate compare: those their selection names (--bench, --family, --variant,
--implementation, --shape), of each commit's recorded results (measured first where one lacks timings
the other holds: measure.Checkouts.compared).

A results folder holds whatever earlier runs recorded there. A gate of the forward+backward timings
(`--bench 'AttentionForwardBackward\.time'`) pointed at a folder where an earlier gate had recorded
BASE's and HEAD's forwards compared those forwards and passed (exit 0 in 0 s, on an H200): it read
every row, and measured a commit only where it had no results at all. The rows compared are now
those `variantbench run` with the same options records.

The rows compared are timings (".time_" in the name) with their tracks; the signal budget is judged
on the ratios of the selection's families, variants and shapes whatever --bench and --implementation
say (`budgeted`).

--tier and --device only say what is measured: a tier is always set (`default` unless given), so
filtering rows by it would drop the full tier's shapes from every default gate, which compares them;
and the device is part of the results' identity, which the gate checks already (gate.check_identity).
"""

import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from variantbench.catalog import answers_to

TIMED = ".time_"  # asv's timed benchmarks: `bench_attention.AttentionForward.time_forward`


def family_of(benchmark: str) -> str:
    """`attention` of `bench_attention.AttentionForward.time_forward`: the suite has one module per family."""
    return benchmark.split(".")[0].removeprefix("bench_")


def benchmarks_named(names, bench, family_names) -> list[str]:
    """Of asv benchmark `names`, those `variantbench run --bench BENCH --family ...` runs: BENCH found
    in the name (re.search; None: any), of one of `family_names` (empty: any). Raises re.error for a
    BENCH that is no regular expression."""
    return [name for name in names
            if (not bench or re.search(bench, name)) and (not family_names or family_of(name) in family_names)]


def timing_keys(rows) -> set:
    """{(benchmark, params)} of the timings among `rows` (results.COLUMNS): what compare and gate compare."""
    timed = rows[rows.benchmark.str.contains(TIMED, regex=False)]
    return set(zip(timed.benchmark, timed.params))


@dataclass(frozen=True)
class RowSelection:
    """The name filters of a runner.Selection and --bench, as they select recorded rows. Empty: every row."""

    bench: str | None = None
    families: tuple = ()
    variants: tuple = ()
    implementations: tuple = ()
    shapes: tuple = ()

    @classmethod
    def of(cls, selection, bench):
        """The rows `selection` names, as runner.check_names returns it: a plug-in's typed name as its
        active entry records it (after its file is edited, the figures of its earlier `name@hash` are
        another kernel's). A typed name left as typed selects every `name@hash` (catalog.answers_to)."""
        return cls(bench, selection.families, selection.variants, selection.implementations, selection.shapes)

    @property
    def everything(self) -> bool:
        """Nothing filtered: every recorded row, as compare and gate read them before they filtered."""
        return not (self.bench or self.families or self.variants or self.implementations or self.shapes)

    def budgeted(self) -> "RowSelection":
        """The rows the signal budget is judged on: those of the selection's families, variants and
        shapes. A variant's verdict is its fastest fused implementation's, so --implementation cannot
        narrow it (with --implementation triton, triton read as each variant's fastest and a variant
        within budget failed); and its ratios are tracks, which a timing --bench left out."""
        return replace(self, bench=None, implementations=())

    def __str__(self):
        """The options, plug-in names as recorded (copied into a shell, they select the same)."""
        given = [("--bench", self.bench)] if self.bench else []
        given += [(flag, name) for flag, names in (("--family", self.families), ("--variant", self.variants),
                                                   ("--implementation", self.implementations),
                                                   ("--shape", self.shapes)) for name in names]
        return shlex.join(arg for pair in given for arg in pair)

    def rows(self, frame, root: Path):
        """The rows of `frame` (results.COLUMNS) this selects: the benchmarks --bench and --family name,
        with the power-state and timing-mode tracks of the timings among them where --bench is given
        (asvrun.record_tracks, from `root`'s suite, as `variantbench run --bench` records them), at
        parameters (variant, implementation, shape) that --variant, --implementation and --shape name."""
        from variantbench import asvrun

        if self.everything:
            return frame
        named = benchmarks_named(frame.benchmark.unique(), self.bench, self.families)
        if self.bench:
            named += asvrun.record_tracks(root, named)
        return frame[frame.benchmark.isin(named) & frame.params.map(self._names_params).astype(bool)]

    def _names_params(self, params) -> bool:
        # a benchmark's params are its family's grid, (variant, implementation, shape) (suite.common.grid)
        return all(not names or (len(params) > at and any(answers_to(params[at], name) for name in names))
                   for names, at in ((self.variants, 0), (self.implementations, 1), (self.shapes, 2)))


def checked(selection, bench) -> RowSelection:
    """compare's and gate's RowSelection, its options checked before anything runs, as `variantbench
    run` checks its own: a family or name no family knows (runner.check_names), a --bench that is no
    regular expression or names no benchmark of the families that know the names
    (runner.benchmarks_to_run), or a selection of no timing, is one line and exit 2. Unchecked, a
    mistyped `--variant gqa8` or a bad --bench started a worktree and read "no results" (exit 3), and a
    --bench of tracks alone compared nothing and passed."""
    from variantbench import runner

    named, fams = runner.check_names(selection)
    wanted = RowSelection.of(named, bench)
    fams = runner.knowing(fams, named)
    if not fams:
        runner.fail(f"no family knows every name of the selection {wanted}")
    if not any(TIMED in name for name in runner.benchmarks_to_run(bench, fams)):
        runner.fail(f"the selection {wanted} names no timing benchmark of the suite (compare and gate compare "
                    "timings; their tracks come with them)")
    return wanted


EVERY_ROW = RowSelection()
