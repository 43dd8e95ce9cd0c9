"""The record: one review (or other text) after cleaning, with its privacy unit and control codes.

A :class:`Record` is what ``prepare`` writes to ``DIR/data/{train,test}.jsonl`` (one JSON object per line) and what
training, generation and evaluation read back. Control codes (``codes``) are the attributes a synthetic record is
conditioned on: star rating, category. Their *domains* (the possible values) must be public: they are declared by the
schema or the config, never read off the private data, because the released histogram of codes is only DP over a
fixed domain.

>>> r = Record(text="Great case.", unit="u1", codes={"rating": 5})
>>> Record.from_json(r.to_json()) == r
True
>>> code_key({"rating": 5, "category": "Toys"}, ["category", "rating"])
('Toys', 5)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpsynth.rundir import read_jsonl, write_jsonl

CodeValue = str | int


@dataclass(frozen=True)
class CodeSpec:
    """A control code and its public domain, e.g. ``CodeSpec("rating", (1, 2, 3, 4, 5))``."""

    name: str
    values: tuple[CodeValue, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "values": list(self.values)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CodeSpec:
        return cls(name=str(obj["name"]), values=tuple(obj["values"]))


@dataclass(frozen=True)
class Record:
    """One cleaned record. ``unit`` identifies the privacy unit (a pseudonymous user id, or the record itself)."""

    text: str
    unit: str
    codes: Mapping[str, CodeValue] = field(default_factory=dict)
    title: str | None = None
    item: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unit": self.unit, "text": self.text, "codes": dict(self.codes)}
        if self.title is not None:
            out["title"] = self.title
        if self.item is not None:
            out["item"] = self.item
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Record:
        return cls(
            text=str(obj["text"]),
            unit=str(obj["unit"]),
            codes=dict(obj.get("codes") or {}),
            title=obj.get("title"),
            item=obj.get("item"),
        )


def code_key(codes: Mapping[str, CodeValue], names: Sequence[str]) -> tuple[CodeValue, ...]:
    """The cell of the joint control-code histogram a record falls in, ordered by ``names``."""
    return tuple(codes[n] for n in names)


def write_records(path: Path, records: Iterable[Record]) -> int:
    """Write records as JSONL, atomically."""
    return write_jsonl(path, (r.to_json() for r in records))


def read_records(path: Path) -> list[Record]:
    """Read records that ``prepare`` wrote."""
    return [Record.from_json(obj) for obj in read_jsonl(path)]


def group_by_unit(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records of each privacy unit, in file order; one unit becomes one training example."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.unit, []).append(r)
    return groups
