"""Whether the gate's first pass reads HEAD slower than BASE when nothing changed: the ratios (HEAD / BASE) of every
row a committed gate summary (reports/gate/*.md, `variantbench gate`'s Markdown) called `same`, pooled and gate by
gate.

Why: the gate times BASE's suite, then HEAD's (`variantbench.gating.run_gate`), so a GPU that drifts slower over a
run (our do_bench probe read causal 0.9256 ms first and 1.0092 after 60 s of other variants, session 40) would count
the drift against HEAD. Most gated changes leave most rows' code untouched, so their `same` rows are close to A/A
pairs; a mean log ratio well above 0 would show that bias. Rows called faster or slower are left out (their change
was real), which leans the pool a little toward faster, and so are the suspects a confirming re-run cleared (their
ratio is the re-runs' pooled one, and they were picked for reading slower). A gate summarised twice (an A/A pair
gated at two factors) counts twice.

    python tools/gate_drift.py [GATE.md ...]     (default: reports/gate/*.md)
"""

import math
import re
import statistics
import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from variantbench.gate import CLEARED_LINE as CLEARED  # noqa: E402

ROW = re.compile(r"^\| (?P<benchmark>\S+) \| (?P<params>\S+) \| same \| (?P<ratio>[0-9.]+) \|")


def same_ratios(text):
    """The HEAD / BASE ratios of the rows a gate summary's noise table calls `same`, but the suspects its
    confirming re-run cleared."""
    lines = text.splitlines()
    cleared = {tuple(name.split(" ", 1)) for line in lines if line.startswith(CLEARED)
               for name in line[len(CLEARED):].rstrip(".").split(", ")}
    return [float(m["ratio"]) for m in map(ROW.match, lines)
            if m and float(m["ratio"]) > 0 and (m["benchmark"], m["params"]) not in cleared]


def drift(gates):
    """{gates, rows, mean_log, median_ratio, gates_above}: over the gates (name -> ratios) with any same row, the
    mean log ratio of all their rows, the median ratio, and how many gates' own mean log ratio is above 0."""
    gates = {name: ratios for name, ratios in gates.items() if ratios}
    logs = [math.log(r) for ratios in gates.values() for r in ratios]
    if not logs:
        return None
    per_gate = [statistics.mean(math.log(r) for r in ratios) for ratios in gates.values()]
    return {"gates": len(gates), "rows": len(logs), "mean_log": statistics.mean(logs),
            "median_ratio": math.exp(statistics.median(logs)), "gates_above": sum(x > 0 for x in per_gate)}


@click.command(help=__doc__.split("\n\n")[0])
@click.argument("summaries", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(summaries):
    paths = summaries or sorted((Path(__file__).resolve().parent.parent / "reports" / "gate").glob("*.md"))
    found = drift({path.name: same_ratios(path.read_text()) for path in paths})
    if found is None:
        click.echo(f"gate_drift.py: no `same` row in {len(paths)} gate summaries", err=True)
        sys.exit(2)
    click.echo(f"{found['rows']} same rows in {found['gates']} gates: HEAD / BASE mean log ratio "
               f"{100 * found['mean_log']:+.2f}%, median ratio {found['median_ratio']:.4f}; "
               f"{found['gates_above']} of {found['gates']} gates' own mean above 1")


if __name__ == "__main__":
    main()
