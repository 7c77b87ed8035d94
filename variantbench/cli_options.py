"""The options several `variantbench` commands share, declared once: the case filters (as one
runner.Selection), what compare, gate and bisect measure, --plugin, --results and --factor."""

import dataclasses
import functools
from pathlib import Path

import click

from variantbench import gating, runner
from variantbench.runner import EXIT_BAD_INPUT, ROOT, fail
from variantbench.shapes import TIERS

_TIER_HELP = ("which shapes: quick (headline), default (every commit), full (the whole grid). "
              "See variantbench.shapes.TIERS.")


def filter_options(tier_default, measuring=False, selecting=False):
    """--family, --variant, --implementation, --shape, --device and --tier, declared once for every
    command; the command gets them as one runner.Selection, its `selection` argument. `measuring`: they
    narrow what compare, gate and bisect measure; `selecting`: the names also pick the rows compared."""
    measured = "Measuring: " if measuring else ""
    selected = "Compared (measured where missing): " if selecting else measured

    def said(prefix, text):
        text = prefix + text
        return text[0].upper() + text[1:]

    options = [
        click.option("--family", "families", multiple=True,
                     help=said(selected, "only these families (repeatable; default: all).")),
        click.option("--variant", "variants", multiple=True, help=said(selected, "only these variants (repeatable).")),
        click.option("--implementation", "implementations", multiple=True,
                     help=said(selected, "only these implementations (repeatable).")),
        click.option("--shape", "shapes", multiple=True, help=said(selected, "only these shapes (repeatable).")),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                     help=said(measured, "the device (default: cuda if a GPU is visible).")),
        click.option("--tier", type=click.Choice(TIERS), default=tier_default, show_default=True,
                     help=said(measured, _TIER_HELP)),
    ]

    def decorate(command):
        @functools.wraps(command)
        def with_selection(*args, **kwargs):
            fields = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(runner.Selection)}
            return command(*args, selection=runner.Selection(**fields), **kwargs)

        for option in reversed(options):
            with_selection = option(with_selection)
        return with_selection

    return decorate


def measure_options(selecting=True):
    """What compare, gate and bisect measure: the filters, and these; `selecting` (compare, gate): a
    --bench, which with the names also picks the rows compared (bisect has a --bench of its own)."""
    bench_help = "Compared (measured where missing): asv benchmark regex, as `run --bench` takes it (and its tracks)."
    options = [
        click.option("--no-run", is_flag=True, help="Use only results already present; never measure."),
        *([click.option("--bench", "-b", default=None, help=bench_help)] if selecting else []),
        filter_options("default", measuring=True, selecting=selecting),
        click.option("--machine", default=None,
                     help="Compare the results recorded on this asv machine, and record measurements under it "
                          "(default: the one machine with results for both commits; to measure into one named "
                          "otherwise than this machine, name it)."),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def plugin_option(command):
    """--plugin PATH_OR_MODULE (repeatable) on a command: the plug-ins it and the processes it starts
    see (variantbench.plugins.activate). One that cannot be used is one line and exit 2, before anything runs."""

    @functools.wraps(command)
    def with_plugins(*args, plugins, **kwargs):
        from variantbench import plugins as plugin_files

        try:
            for line in plugin_files.activate_for(plugins, kwargs.get("device")):
                click.echo(line, err=True)
        except plugin_files.PluginError as why:
            if kwargs.get("summary_path") is not None:  # the gate's summary says why it could not decide
                gating.write_summary(kwargs["summary_path"],
                                     gating.not_gated(kwargs["base"], kwargs["head"], EXIT_BAD_INPUT, str(why)),
                                     quiet=True)
            fail(str(why))
        return command(*args, **kwargs)

    return click.option("--plugin", "plugins", multiple=True, metavar="PATH_OR_MODULE",
                        help="A plug-in's variants and kernels (a .py file or a module; repeatable), with those "
                             "[tool.variantbench] plugins of ./pyproject.toml lists.")(with_plugins)


results_option = click.option("--results", "results_dir", type=click.Path(path_type=Path),
                               default=ROOT / "reports" / "results", show_default=True, help="asv results folder.")
factor_option = click.option("--factor", type=click.FloatRange(min=1.0, min_open=True), default=None,
                              help="Regression factor for this call (default: [tool.variantbench] regression_factor).")
