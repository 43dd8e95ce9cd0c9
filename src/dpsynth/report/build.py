"""``build_report``: DIR/eval/metrics.json + DIR/dp/privacy.json -> DIR/report.html, one self-contained file.

Why one file with everything inlined (CSS, SVG plots; no script at all): the report is what a data owner reads and
passes on, often offline, so it must open anywhere and fetch nothing. A Content-Security-Policy in the page forbids
every external load and every script, so even a mistake in a template cannot make the page call out.

Why jinja2 with autoescape on: the report shows synthetic text, category names and metric definitions, all of which
could contain markup; every string is escaped by the template engine, and only the SVG produced by
:mod:`dpsynth.report.plots` is inserted as markup.

The file is rendered in memory and written with :func:`dpsynth.rundir.write_text` (temporary file, then rename), so
a reader never sees half a report and a failed build leaves the previous one in place.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import jinja2

from dpsynth import __version__
from dpsynth.report.fidelity_section import build_fidelity
from dpsynth.report.fmt import fmt
from dpsynth.report.inputs import Inputs, load_inputs
from dpsynth.report.model import Section
from dpsynth.report.other_sections import build_appendix, build_quality, build_samples, build_utility
from dpsynth.report.privacy_section import build_privacy
from dpsynth.report.summary import build_summary
from dpsynth.rundir import RunDir, write_text

SECTION_IDS = ("summary", "privacy", "fidelity", "utility", "quality", "samples", "appendix")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dpsynth.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a template typo fails the build (and the tests) instead of rendering blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    return env


def build_sections(inputs: Inputs) -> list[Section]:
    """All sections in order. The appendix comes last but reads only the metric list, so order does not matter
    for it; the other sections must run before any "other metrics" listing, which they each do for their group."""
    return [
        build_summary(inputs),
        build_privacy(inputs),
        build_fidelity(inputs),
        build_utility(inputs),
        build_quality(inputs),
        build_samples(inputs),
        build_appendix(inputs),
    ]


def render_report(run: RunDir) -> str:
    """The report's HTML for ``run`` (nothing is written)."""
    inputs = load_inputs(run)
    sections = build_sections(inputs)
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=f"dpsynth report: {run.root.name or run.root}",
        run_dir=str(run.root),
        model=inputs.run.get("model"),
        version=__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        warnings=inputs.warnings,
        sections=sections,
    )


def build_report(run: RunDir) -> Path:
    """Write ``DIR/report.html`` from the run's metrics.json and privacy.json, atomically; returns its path.

    Raises :class:`dpsynth.errors.DPSynthError` when metrics.json is missing or not JSON. Anything else missing from
    a partial run is rendered as a "not measured" note.
    """
    html = render_report(run)
    write_text(run.report_html, html)
    return run.report_html
