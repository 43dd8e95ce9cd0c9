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
from dpsynth.report.sizes import CAUTION, THRESHOLDS_NOTE, size_note, too_small


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
    n: int | None = None  # the arm's sample size (records, or test records for a classifier's accuracy)
    n_real: int | None = None  # the real side's sample size, when the metric compares with real data
    sd: float | None = None  # the spread over repeated draws, when the value is a mean over them (MAUVE)

    @property
    def small(self) -> bool:
        """Whether the sample is below this metric's threshold (:mod:`dpsynth.report.sizes`)."""
        return too_small(self.name, self.n, self.n_real)

    def shown(self) -> str:
        """The value with its sample size, and the caution mark when the sample is too small to mean anything."""
        value = fmt(self.value) + (f" ± {fmt(self.sd)}" if self.value is not None and self.sd is not None else "")
        if self.n is None:
            return value
        return f"{value} ({size_note(self.n, self.n_real)})" + (f" {CAUTION}" if self.small else "")


def _size(entry: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        v = entry.get(key)
        if is_number(v) and not isinstance(v, bool):
            return int(v)
    return None


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
                    # a classifier's accuracy is as precise as its test set is large; elsewhere, the arm's records
                    n=_size(entry, "n_test", "n") if entry["name"].startswith("utility.") else _size(entry, "n"),
                    n_real=None if entry["name"].startswith("utility.") else _size(entry, "n_real"),
                    sd=float(entry["sd"]) if is_number(entry.get("sd")) and not isinstance(entry["sd"], bool) else None,
                )
            )

    def get(self, name: str, arm: str) -> float | int | None:
        for m in self.metrics:
            if m.name == name and m.arm == arm:
                return m.value
        return None

    def arms_of(self, name: str) -> dict[str, float | int | None]:
        return {m.arm: m.value for m in self.metrics if m.name == name}

    def metrics_of(self, name: str) -> dict[str, Metric]:
        return {m.arm: m for m in self.metrics if m.name == name}

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
        values = {m.arm: m.shown() for m in of_name}
        rows.append(
            [
                name,
                *(values.get(a, "") for a in arms),
                better_label(of_name[0].better),
                of_name[0].definition,
            ]
        )
    columns = ["metric", *(arm_label(a) for a in arms), "better", "definition"]
    numeric = [False, *([True] * len(arms)), False, False]
    return Table(columns=columns, rows=rows, numeric=numeric, caption=with_sizes_note(caption, metrics))


def with_sizes_note(caption: str, metrics: Iterable[Metric]) -> str:
    """``caption``, followed by what the sample sizes and the caution mark mean when the metrics carry sizes."""
    return f"{caption} {THRESHOLDS_NOTE}".strip() if any(m.n is not None for m in metrics) else caption
