"""Schemas: how a raw row of a user file becomes raw records (text, title, user, item, control codes) or drop reasons.

Built in: ``amazon2014`` (``reviewText``/``summary``/``overall``/``reviewerID``/``asin``, optional ``category``),
``amazon2023`` (the flat review format, optionally joined with product metadata for the category, and the nested
one-user-per-line history format), ``generic`` (columns named in ``data.fields``), and ``auto`` (detected from the
first row's field names).

Control codes are mapped onto *public* domains (:mod:`dpsynth.data.categories` or ``data.code_domains``); a value
outside its domain drops the record (``code_out_of_domain``), it never widens the domain. A row whose required value
is empty is dropped as ``incomplete``; with ``data.missing_code_value``, an empty code other than the label takes that
value instead, added to the code's public domain (a config constant: the domain stays public). A required field that
*no* row has is an error naming the file and field (:meth:`Schema.check_columns`, :meth:`Schema.missing_fields`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpsynth.data.records import CodeSpec, CodeValue
from dpsynth.errors import InputError

INCOMPLETE = "incomplete"
OUT_OF_DOMAIN = "code_out_of_domain"
NO_METADATA = "no_metadata"
SCHEMAS = ("amazon2014", "amazon2023", "yelp", "generic")


@dataclass
class RawRecord:
    """A record as read (before cleaning), with the reason it is unusable (``drop``) if it is."""

    line: int
    text: str | None
    codes: dict[str, CodeValue] = field(default_factory=dict)
    title: str | None = None
    user: str | None = None
    item: str | None = None
    drop: str | None = None
    filled: tuple[str, ...] = ()  # codes that were empty and took data.missing_code_value


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _as_id(value: Any) -> str | None:
    """A user or item id as a string (JSON may hold numbers); None when empty."""
    if not _present(value) or isinstance(value, (dict, list, bool)):
        return None
    return str(value).strip()


@dataclass(frozen=True)
class CodeField:
    """One control code: where its raw value is (``column``) and how it maps onto the public domain."""

    name: str
    column: str
    domain: tuple[CodeValue, ...]
    lookup: Callable[[Any], CodeValue | None]
    via_item: Mapping[str, str | None] | None = None  # metadata join: item id -> canonical value (None: unmapped)
    missing: CodeValue | None = None  # the value of an empty column (data.missing_code_value); None: incomplete

    def resolve(self, row: Mapping[str, Any]) -> tuple[CodeValue | None, str | None]:
        raw = row.get(self.column)
        if not _present(raw):
            return (None, INCOMPLETE) if self.missing is None else (self.missing, None)
        if self.via_item is not None:
            item = _as_id(raw)
            if item is None or item not in self.via_item:
                return None, NO_METADATA
            raw = self.via_item[item]
            if raw is None:
                return None, OUT_OF_DOMAIN
        value = self.lookup(raw)
        return (None, OUT_OF_DOMAIN) if value is None else (value, None)


class Schema:
    """A flat schema: one row is one record. Tracks which required fields have had a value (``seen``)."""

    def __init__(
        self,
        name: str,
        *,
        text: str,
        title: str | None,
        user: str | None,
        item: str | None,
        codes: Sequence[CodeField],
        user_required: bool,
    ) -> None:
        self.name = name
        self.text, self.title, self.user, self.item = text, title, user, item
        self.codes = tuple(codes)
        required = [text, *(c.column for c in self.codes)]
        if user_required and user is not None:
            required.append(user)
        self.required: tuple[str, ...] = tuple(dict.fromkeys(required))
        self.seen: set[str] = set()
        self.label: str | None = None
        self.roles: dict[str, str] = {}

    @property
    def code_specs(self) -> list[CodeSpec]:
        return [CodeSpec(c.name, c.domain) for c in self.codes]

    def _note(self, row: Mapping[str, Any], prefix: str = "") -> None:
        """Mark required fields with a value in ``row``; ``prefix`` selects nested fields (``history[].``)."""
        for name in self.required:
            if name in self.seen or ("[]." in name) != bool(prefix) or not name.startswith(prefix):
                continue
            if _present(row.get(name.removeprefix(prefix))):
                self.seen.add(name)

    def check_columns(self, columns: Sequence[str], path: Path | str, line: int) -> None:
        """For files with a header (CSV, Parquet): fail at once when a required column is absent."""
        for name in self.required:
            if name not in columns:
                raise InputError("required column is missing from the header", path=path, line=line, field=name)

    def missing_fields(self) -> list[str]:
        """Required fields that no row had a value for (checked after the whole file was read)."""
        return [name for name in self.required if name not in self.seen]

    def _record(self, row: Mapping[str, Any], line: int) -> RawRecord:
        text = row.get(self.text)
        rec = RawRecord(
            line=line,
            text=text if isinstance(text, str) else None,
            title=_title(row.get(self.title)) if self.title else None,
            user=_as_id(row.get(self.user)) if self.user else None,
            item=_as_id(row.get(self.item)) if self.item else None,
        )
        if rec.text is None or not rec.text.strip():
            rec.drop = INCOMPLETE
        for code in self.codes:
            value, reason = code.resolve(row)
            if value is not None:
                rec.codes[code.name] = value
                if code.missing is not None and not _present(row.get(code.column)):
                    rec.filled += (code.name,)
            elif rec.drop is None or (rec.drop != INCOMPLETE and reason == INCOMPLETE):
                rec.drop = reason
        return rec

    def map(self, row: Mapping[str, Any], line: int) -> list[RawRecord]:
        """The raw records of one row (a flat schema gives exactly one)."""
        self._note(row)
        return [self._record(row, line)]


def _title(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


class NestedSchema2023(Schema):
    """Amazon 2023 user histories: one user per line, ``history`` exploded into one record per review.

    The user's ``category`` (a release category name) is the category code; when absent, the product's
    ``main_category`` display name is mapped onto the release list. The ``heldout`` review is not used: the upstream
    set keeps it apart for recommendation benchmarks, and the README counts only ``history`` reviews.
    """

    def __init__(self, codes: Sequence[CodeField], *, user_required: bool) -> None:
        super().__init__(
            "amazon2023",
            text="review_full",
            title="review_title",
            user="user_id",
            item="parent_asin",
            codes=codes,
            user_required=False,
        )
        self.required = (
            "history",
            "history[].review_full",
            "history[].rating",
            *(("user_id",) if user_required else ()),
        )
        self._category = next((c for c in self.codes if c.name == "category"), None)

    def map(self, row: Mapping[str, Any], line: int) -> list[RawRecord]:
        self._note(row)
        history = row.get("history")
        if not isinstance(history, list):
            return [RawRecord(line=line, text=None, drop=INCOMPLETE)]
        user = row.get("user_id")
        category = row.get("category")
        out = []
        for item in history:
            if not isinstance(item, dict):
                out.append(RawRecord(line=line, text=None, drop=INCOMPLETE))
                continue
            self._note(item, prefix="history[].")
            flat = dict(item)
            flat["user_id"] = user
            if self._category is not None and not _present(category):
                product = item.get("product")
                flat["category"] = product.get("main_category") if isinstance(product, dict) else None
            elif self._category is not None:
                flat["category"] = category
            out.append(self._record(flat, line))
        return out


# --------------------------------------------------------------------------------------------------------------------
# Building a schema from the config and the first row
