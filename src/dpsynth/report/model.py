"""The report's view model: sections made of parts (text, a table, a figure, or a "not measured" note).

Why a view model: the template stays a dumb loop over sections and parts, and every decision (what exists, how a
number is formatted, why something is missing) is made in Python, where it is typed and tested. Every string here is
plain text: the template escapes it. Only :attr:`Figure.svg` is markup, produced by matplotlib (which escapes the text
it draws) and never containing a string that was not also escaped by it.

:class:`MetricIndex` holds metrics.json's flat metric list. Sections *take* the metrics they show, so that at the end
each section can list the metrics of its group that nothing else displayed ("other metrics") and no metric is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from dpsynth.report.fmt import arm_label, better_label, fmt, is_number, order_arms


@dataclass
class Table:
    """A table of preformatted strings. ``numeric[i]`` right-aligns column ``i``."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    caption: str = ""

    def __post_init__(self) -> None:
        if not self.numeric:
            self.numeric = [False] * len(self.columns)


@dataclass
class Figure:
    """An inline SVG plot and a caption that says what it shows and which direction is better."""

    svg: Markup
    caption: str


@dataclass
class Verdict:
    """One line of the summary; ``status`` is ``ok``, ``warn``, ``bad`` or ``info`` (a CSS class)."""

    text: str
    status: str = "info"


@dataclass
class Part:
    """A sub-section: a title, then any of paragraphs, bullet items, verdicts, a table, a figure, or a missing note."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing: str | None = None
    warning: str | None = None
    pre: list[tuple[str, str]] = field(default_factory=list)  # (heading, text) shown verbatim (escaped), for samples


@dataclass
class Section:
    id: str
    title: str
    parts: list[Part]
    intro: str = ""


def missing(title: str, reason: str, **kwargs: Any) -> Part:
    """A part that was not measured, saying why (the report never crashes on a partial run)."""
    return Part(title=title, missing=reason, **kwargs)


@dataclass(frozen=True)
class Metric:
    name: str
    group: str
    arm: str
    value: float | int | None  # ints stay ints: a count shows as 3, not 3.000
    better: str
    definition: str


class MetricIndex:
    """metrics.json's metric entries, tolerant of malformed ones (counted in :attr:`skipped`, not fatal)."""

    def __init__(self, entries: Any) -> None:
        self.metrics: list[Metric] = []
        self.skipped = 0
        self._shown: set[int] = set()
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                self.skipped += 1
                continue
            value = entry.get("value")
            self.metrics.append(
                Metric(
                    name=entry["name"],
                    group=str(entry.get("group") or entry["name"].split(".", 1)[0]),
                    arm=str(entry.get("arm") or ""),
                    value=value if is_number(value) else None,
                    better=str(entry.get("better") or "none"),
                    definition=str(entry.get("definition") or ""),
                )
            )

    def get(self, name: str, arm: str) -> float | int | None:
        for m in self.metrics:
            if m.name == name and m.arm == arm:
                return m.value
        return None

    def arms_of(self, name: str) -> dict[str, float | int | None]:
        return {m.arm: m.value for m in self.metrics if m.name == name}

    def take(self, predicate: Callable[[Metric], bool]) -> list[Metric]:
        """The metrics matching ``predicate``, marked as shown."""
        out = []
        for i, m in enumerate(self.metrics):
            if predicate(m):
                self._shown.add(i)
                out.append(m)
        return out

    def mark(self, predicate: Callable[[Metric], bool]) -> None:
        """Mark metrics as shown elsewhere (e.g. in a table built from metrics.json's ``tables``)."""
        self.take(predicate)

    def remaining(self, group: str) -> list[Metric]:
        """The group's metrics that no part has shown yet (then marked shown)."""
        out = []
        for i, m in enumerate(self.metrics):
            if m.group == group and i not in self._shown:
                self._shown.add(i)
                out.append(m)
        return out


def pivot(metrics: Iterable[Metric], caption: str = "") -> Table | None:
    """One row per metric name, one column per arm, then the direction and the definition; None if empty."""
    metrics = list(metrics)
    if not metrics:
        return None
    names: list[str] = []
    for m in metrics:
        if m.name not in names:
            names.append(m.name)
    arms = order_arms([m.arm for m in metrics])
    rows = []
    for name in names:
        of_name = [m for m in metrics if m.name == name]
        values = {m.arm: m.value for m in of_name}
        rows.append(
            [
                name,
                *(fmt(values[a]) if a in values else "" for a in arms),
                better_label(of_name[0].better),
                of_name[0].definition,
            ]
        )
    columns = ["metric", *(arm_label(a) for a in arms), "better", "definition"]
    numeric = [False, *([True] * len(arms)), False, False]
    return Table(columns=columns, rows=rows, numeric=numeric, caption=caption)
