r"""The rows compare and gate compare: those their selection names (--bench, --family, --variant,
--implementation, --shape), of each commit's recorded results, measured first where they lack them.

A results folder holds whatever earlier runs recorded there. A gate of the forward+backward timings
(`--bench 'AttentionForwardBackward\.time'`) pointed at a folder where an earlier gate had recorded
BASE's and HEAD's forwards compared those forwards and passed (exit 0 in 0 s, on an H200): it read
every row, and measured a commit only where it had no results at all. The rows compared are now
those `variantbench run` with the same options records.

--tier and --device only say what is measured: a tier is always set (`default` unless given), so
filtering rows by it would drop the full tier's shapes from every default gate, which compares them;
and the device is part of the results' identity, which the gate checks already (gate.check_identity).
"""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from variantbench.catalog import answers_to


def family_of(benchmark: str) -> str:
    """`attention` of `bench_attention.AttentionForward.time_forward`: the suite has one module per family."""
    return benchmark.split(".")[0].removeprefix("bench_")


def benchmarks_named(names, bench, family_names) -> list[str]:
    """Of asv benchmark `names`, those `variantbench run --bench BENCH --family ...` runs: BENCH found
    in the name (re.search; None: any), of one of `family_names` (empty: any). Raises re.error for a
    BENCH that is no regular expression."""
    return [name for name in names
            if (not bench or re.search(bench, name)) and (not family_names or family_of(name) in family_names)]


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
        return cls(bench, selection.families, selection.variants, selection.implementations, selection.shapes)

    @property
    def everything(self) -> bool:
        """Nothing filtered: every recorded row, as compare and gate read them before they filtered."""
        return not (self.bench or self.families or self.variants or self.implementations or self.shapes)

    def __str__(self):
        """The options as typed (copied into a shell, they select the same)."""
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

    def unrecorded(self, selected, root: Path) -> list[str]:
        """The timed benchmarks of `root`'s suite that --bench (and --family) name and that `selected`,
        the rows this selects of a commit's results, holds none of: what measuring must add.

        Only with --bench. Without it every benchmark is named, and a results file need not hold every
        one (a family with nothing to run on one GPU, the collectives, is not recorded there): then a
        commit is measured only where it holds none of the selected rows. Tracks are not asked for:
        they derive from their timings' processes, and older results lack newer ones (power, session 19)."""
        from variantbench import asvrun

        if not self.bench:
            return []
        held = set(selected.benchmark)
        return [name for name in benchmarks_named(asvrun.suite_benchmarks(root), self.bench, self.families)
                if ".time_" in name and name not in held]


EVERY_ROW = RowSelection()
