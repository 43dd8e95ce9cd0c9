"""A small structural reader of the report's HTML (stdlib ``html.parser``): sections, tables, ids, tags.

Tests look at the parsed structure rather than grepping strings, so that "every metric is in the appendix" means a
row of the appendix table holds it, not that the name occurs somewhere in the page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class ParsedTable:
    section: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[str] = []
        self.tables: list[ParsedTable] = []
        self.tags: Counter[str] = Counter()
        self.ids: Counter[str] = Counter()
        self.missing_notes: list[tuple[str, str]] = []  # (section, text)
        self.attrs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.text_by_section: dict[str, list[str]] = {}
        self._section = ""
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False
        self._caption: list[str] | None = None
        self._missing: list[str] | None = None
        self._stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        a = {k: v or "" for k, v in attrs}
        for k, v in a.items():
            self.attrs.append((tag, k, v))
        if "id" in a:
            self.ids[a["id"]] += 1
        if tag == "section":
            self._section = a.get("id", "")
            self.sections.append(self._section)
        elif tag == "table":
            self.tables.append(ParsedTable(self._section))
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._caption = []
        elif tag == "p" and "missing" in a.get("class", "").split():
            self._missing = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            (table.columns if self._in_head else table.rows).extend([self._row] if not self._in_head else self._row)
            self._row = None
        elif tag == "caption" and self._caption is not None:
            self.tables[-1].caption = "".join(self._caption).strip()
            self._caption = None
        elif tag == "p" and self._missing is not None:
            self.missing_notes.append((self._section, " ".join("".join(self._missing).split())))
            self._missing = None
        elif tag == "section":
            self._section = ""

    def handle_data(self, data: str) -> None:
        for buf in (self._cell, self._caption, self._missing):
            if buf is not None:
                buf.append(data)
        self.text_by_section.setdefault(self._section, []).append(data)


@dataclass
class Parsed:
    sections: list[str]
    tables: list[ParsedTable]
    tags: Counter[str]
    ids: Counter[str]
    missing_notes: list[tuple[str, str]]
    attrs: list[tuple[str, str, str]]
    text_by_section: dict[str, str]

    def text(self, section: str) -> str:
        """The visible text of a section, whitespace collapsed (entities decoded)."""
        return " ".join(self.text_by_section.get(section, "").split())

    def tables_in(self, section: str) -> list[ParsedTable]:
        return [t for t in self.tables if t.section == section]


def parse(html: str) -> Parsed:
    r = _Reader()
    r.feed(html)
    r.close()
    return Parsed(
        sections=r.sections,
        tables=r.tables,
        tags=r.tags,
        ids=r.ids,
        missing_notes=r.missing_notes,
        attrs=r.attrs,
        text_by_section={k: " ".join(v) for k, v in r.text_by_section.items()},
    )
