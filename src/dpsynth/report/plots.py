"""Plots as inline SVG, so the report is one self-contained file that opens offline.

Why SVG from matplotlib's object API (no pyplot): vector plots are small for histograms and bars, stay sharp when
zoomed, keep their text as text (``svg.fonttype = none``), and the object API keeps no global figure state, so
building a report leaves nothing behind in the process.

Several SVGs live in one HTML document, so every ``id`` matplotlib writes (``figure_1``, clip paths, markers) is
prefixed with the figure's key, and so are the references to them: ids stay unique and each figure points only at
its own definitions. A fixed hash salt per figure and no date in the metadata make the output deterministic.

Labels come from data (category names): ``$`` is escaped so that matplotlib's mathtext never interprets them, and
matplotlib's SVG writer escapes ``<``, ``>`` and ``&`` in text and attributes.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
from markupsafe import Markup
from matplotlib.figure import Figure as MplFigure

from dpsynth.report.fmt import arm_color, arm_label, order_arms

_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.size": 9,
    "font.family": "sans-serif",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}
_KEY = re.compile(r"^[a-z0-9-]+$")


def label_text(text: object, limit: int = 40) -> str:
    """Data text made safe for a matplotlib label: no mathtext, bounded length.

    >>> label_text("Cases $5-$10")
    'Cases \\\\$5-\\\\$10'
    """
    s = str(text)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


@contextlib.contextmanager
def _style(key: str) -> Iterator[None]:
    if not _KEY.match(key):
        raise ValueError(f"figure key {key!r} must be lower-case letters, digits and dashes")
    rc: Any = {**_RC, "svg.hashsalt": f"dpsynth-report-{key}"}  # Any: matplotlib types keys as a Literal union
    with mpl.rc_context(rc):
        yield


def _svg(fig: MplFigure, key: str) -> Markup:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]  # drop the XML declaration and DOCTYPE: not allowed inside HTML
    prefix = f"fig-{key}-"
    text = re.sub(r'\bid="', f'id="{prefix}', text)
    text = text.replace('href="#', f'href="#{prefix}').replace("url(#", f"url(#{prefix}")
    return Markup(text)


figure_style = _style
"""The report's plot style for figure ``key`` (a context manager), for other self-contained pages (the frontier)."""
svg_markup = _svg
"""A figure as inline SVG whose ids are prefixed with ``key`` (unique within a page), for other pages too."""


def _legend(fig: MplFigure, ax: object) -> None:
    """One legend above the plot area, so that it never hides a bar or a curve."""
    handles, labels = ax.get_legend_handles_labels()  # type: ignore[attr-defined]
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4))


def _clean(values: object) -> np.ndarray | None:
    """Finite numbers of a JSON list, or None when there are none (absent or empty series are skipped)."""
    if not isinstance(values, (list, tuple)):
        return None
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    arr = np.asarray(nums, dtype=float)
    arr = arr[np.isfinite(arr)]
    return arr if arr.size else None


def histogram(series: Mapping[str, object], *, key: str, xlabel: str, bins: int = 30) -> Markup | None:
    """Overlaid step histograms (density) of each series on shared bins; None when no series has a value."""
    clean = {arm: arr for arm in order_arms(list(series)) if (arr := _clean(series[arm])) is not None}
    if not clean:
        return None
    lo = min(float(a.min()) for a in clean.values())
    hi = max(float(a.max()) for a in clean.values())
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1).tolist()
    with _style(key):
        fig = MplFigure(figsize=(7.0, 3.0), layout="constrained")
        ax = fig.subplots()
        for i, (arm, arr) in enumerate(clean.items()):
            color = arm_color(arm, i)
            reference = arm in ("real", "reference", "test")
            ax.hist(
                arr,
                bins=edges,
                density=True,
                histtype="stepfilled" if reference else "step",
                alpha=0.25 if reference else 1.0,
                color=color,
                linewidth=1.8,
                label=f"{label_text(arm_label(arm))} (n={arr.size:,})",
            )
        ax.set_xlabel(label_text(xlabel, 80))
        ax.set_ylabel("density")
        _legend(fig, ax)
        return _svg(fig, key)


#: Width of the plot area in characters of the tick font (7 inch figure, ~85% axes, 9 pt sans-serif ~ 5.4 pt/char).
_AXIS_CHARS = 7.0 * 72 * 0.85 / 5.4
_MAX_LINES = 3


def tick_labels(domain: Sequence[object]) -> list[str] | None:
    """Labels for a vertical bar chart's x axis, wrapped onto up to three lines so that neighbours never overlap;
    None when even that does not fit (the caller then draws horizontal bars). Underscores read as spaces.

    >>> tick_labels([1, 2, 3])
    ['1', '2', '3']
    >>> tick_labels(["Cell_Phones_and_Accessories", "Electronics", "Home_and_Kitchen", "Toys_and_Games"])
    ['Cell Phones and\\nAccessories', 'Electronics', 'Home and Kitchen', 'Toys and Games']
    >>> tick_labels(["A very long category name that will not fit anywhere at all"] * 8) is None
    True
    """
    width = max(1, int(_AXIS_CHARS / max(len(domain), 1) * 0.85))  # a gap between neighbours
    out = []
    for d in domain:
        text = label_text(str(d).replace("_", " "), 60)
        lines = textwrap.wrap(text, width, break_long_words=False) or [""]
        if len(lines) > _MAX_LINES or max(len(line) for line in lines) > width:
            return None
        out.append("\n".join(lines))
    return out


def grouped_bars(
    domain: Sequence[object], series: Mapping[str, object], *, key: str, ylabel: str, xlabel: str
) -> Markup | None:
    """Bars per domain value, one bar per series (frequencies); series whose length differs from the domain are
    skipped. Vertical with wrapped labels (:func:`tick_labels`) when they fit side by side, else horizontal, so that
    no two labels overlap."""
    clean = {
        arm: arr
        for arm in order_arms(list(series))
        if (arr := _clean(series[arm])) is not None and arr.size == len(domain)
    }
    if not clean or not domain:
        return None
    wrapped = tick_labels(domain) if len(domain) <= 8 else None
    horizontal = wrapped is None
    labels = [label_text(str(d).replace("_", " "), 32) for d in domain] if horizontal else wrapped
    pos = np.arange(len(domain), dtype=float)
    width = 0.8 / len(clean)
    with _style(key):
        height = max(3.0, 0.22 * len(domain) * max(1, len(clean)) / 1.5) if horizontal else 3.0
        fig = MplFigure(figsize=(7.0, min(height, 14.0)), layout="constrained")
        ax = fig.subplots()
        for i, (arm, arr) in enumerate(clean.items()):
            offset = pos - 0.4 + width * (i + 0.5)
            color, label = arm_color(arm, i), label_text(arm_label(arm))
            if horizontal:
                ax.barh(offset, arr, height=width, color=color, label=label)
            else:
                ax.bar(offset, arr, width=width, color=color, label=label)
        if horizontal:
            ax.set_yticks(pos, labels)
            ax.invert_yaxis()
            ax.set_xlabel(ylabel)
            ax.set_ylabel(label_text(xlabel, 80))
        else:
            ax.set_xticks(pos, labels)
            ax.tick_params(axis="x", length=0)
            ax.set_ylabel(ylabel)
            ax.set_xlabel(label_text(xlabel, 80))
        _legend(fig, ax)
        return _svg(fig, key)


def utility_bars(
    accuracy: Mapping[tuple[str, str], Mapping[str, float]], majority: Mapping[str, float], *, key: str
) -> Markup | None:
    """Accuracy bars: one panel per task, a group per feature family, a bar per training source, and the task's
    majority-class accuracy as a dashed line. ``accuracy[(family, task)][source]``."""
    if not accuracy:
        return None
    tasks = list(dict.fromkeys(task for _, task in accuracy))
    families = list(dict.fromkeys(family for family, _ in accuracy))
    sources = order_arms([s for by_source in accuracy.values() for s in by_source])
    with _style(key):
        fig = MplFigure(figsize=(7.0, 3.2), layout="constrained")
        axes = fig.subplots(1, len(tasks), sharey=True, squeeze=False)[0]
        width = 0.8 / len(sources)
        for ax, task in zip(axes, tasks, strict=True):
            pos = np.arange(len(families), dtype=float)
            for i, source in enumerate(sources):
                values = [accuracy.get((f, task), {}).get(source, np.nan) for f in families]
                ax.bar(
                    pos - 0.4 + width * (i + 0.5),
                    values,
                    width=width,
                    color=arm_color(source, i),
                    label=label_text(arm_label(source)),
                )
            if task in majority:
                ax.axhline(majority[task], color="#222222", linestyle="--", linewidth=1.2, label="majority class")
            ax.set_xticks(pos, [label_text(f) for f in families])
            ax.set_title(label_text(f"task: {task}"))
            ax.set_ylim(0, 1)
        axes[0].set_ylabel("accuracy on real test split")
        _legend(fig, axes[0])
        return _svg(fig, key)
