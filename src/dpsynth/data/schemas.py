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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dpsynth.data.categories import (
    AMAZON_2014_CATEGORIES,
    AMAZON_2023_CATEGORIES,
    RATINGS,
    YELP_CATEGORIES,
    YELP_CATEGORY_PREFIX,
    YELP_RATING_PREFIX,
    DomainLookup,
    canonical_2023_category,
)
from dpsynth.data.config import DataConfig
from dpsynth.data.readers import read_rows
from dpsynth.data.records import CodeSpec, CodeValue
from dpsynth.data.roles import code_roles, resolve_label
from dpsynth.errors import ConfigError, InputError

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


def detect_schema(keys: Sequence[str], cfg: DataConfig) -> str | None:
    """The built-in schema that the first row's field names suggest, or None.

    >>> detect_schema(["reviewerID", "asin", "reviewText", "overall"], DataConfig())
    'amazon2014'
    >>> detect_schema(["user_id", "category", "history"], DataConfig())
    'amazon2023'
    """
    ks = set(keys)
    if {"history", "user_id"} <= ks:
        return "amazon2023"
    if "reviewText" in ks or "overall" in ks:
        return "amazon2014"
    if {"parent_asin", "rating", "text"} <= ks:
        return "amazon2023"
    if {"text", "label1", "label2"} <= ks:
        return "yelp"
    if cfg.fields.text in ks:
        return "generic"
    return None


def _domain(cfg: DataConfig, name: str, builtin: Sequence[CodeValue]) -> tuple[CodeValue, ...]:
    """The built-in domain of a code, or the narrower public domain the config declares for it."""
    values = cfg.code_domains.get(name)
    if values is None:
        return tuple(builtin)
    if not values:
        raise ConfigError(f"data.code_domains.{name} is empty")
    return tuple(values)


def _code(cfg: DataConfig, name: str, column: str, builtin: Sequence[CodeValue], **kw: Any) -> CodeField:
    domain = _domain(cfg, name, builtin)
    return CodeField(name, column, domain, DomainLookup(domain), **kw)


def _prefixed(cfg: DataConfig, name: str, column: str, builtin: Sequence[CodeValue], prefix: str) -> CodeField:
    """A code whose file spells its values behind a fixed label (Yelp: ``"Review Stars: 4.0"`` is rating 4).

    >>> f = _prefixed(DataConfig(), "rating", "label2", RATINGS, YELP_RATING_PREFIX)
    >>> f.lookup("Review Stars: 4.0"), f.lookup("4"), f.lookup("Review Stars: 4.5")
    (4, 4, None)
    """
    domain = _domain(cfg, name, builtin)
    exact = DomainLookup(domain)

    def lookup(raw: Any) -> CodeValue | None:
        if isinstance(raw, str) and raw.strip().startswith(prefix):
            raw = raw.strip()[len(prefix) :].strip()
        return exact(raw)

    return CodeField(name, column, domain, lookup)


def _category_2023(cfg: DataConfig, column: str) -> CodeField:
    """A 2023 category read from a release name or a metadata display name ("All Beauty", "Amazon Home")."""
    domain = _domain(cfg, "category", AMAZON_2023_CATEGORIES)
    exact = DomainLookup(domain)

    def lookup(raw: Any) -> CodeValue | None:
        canonical = canonical_2023_category(str(raw)) if isinstance(raw, str) else None
        return None if canonical is None else exact(canonical)

    return CodeField("category", column, domain, lookup)


def _load_meta(cfg: DataConfig) -> dict[str, str | None]:
    """parent_asin -> 2023 release category of the product metadata file (public data). Null category: Unknown."""
    assert cfg.meta_path is not None
    table: dict[str, str | None] = {}
    for line, row in read_rows(cfg.meta_path):
        asin = _as_id(row.get("parent_asin"))
        if asin is None:
            raise InputError("metadata row without a parent_asin", path=cfg.meta_path, line=line, field="parent_asin")
        main = row.get("main_category")
        table[asin] = canonical_2023_category(str(main)) if _present(main) else "Unknown"
    return table


def build_schema(cfg: DataConfig, first_row: Mapping[str, Any], path: Path | str) -> Schema:
    """The schema for a file, given the config and its first row (for ``auto`` and optional columns); with the codes'
    roles, the label, and ``data.missing_code_value`` for every code but the label."""
    schema = _build_schema(cfg, first_row, path)
    roles = code_roles(schema.code_specs, cfg.code_roles)
    schema.label = resolve_label(schema.code_specs, cfg.label, roles)
    missing = cfg.missing_code_value
    if missing is not None:
        schema.codes = tuple(c if c.name == schema.label else _with_missing(c, missing) for c in schema.codes)
    schema.roles = code_roles(schema.code_specs, cfg.code_roles)  # the domains may have grown by the missing value
    return schema


def _with_missing(code: CodeField, missing: CodeValue) -> CodeField:
    """``code`` with ``missing`` as an empty column's value, appended to its domain (accepted when spelled out)."""
    domain = tuple(dict.fromkeys((*code.domain, missing)))
    lookup = DomainLookup(domain) if isinstance(code.lookup, DomainLookup) else code.lookup
    return replace(code, domain=domain, lookup=lookup, missing=missing)


def _build_schema(cfg: DataConfig, first_row: Mapping[str, Any], path: Path | str) -> Schema:
    keys = list(first_row)
    name: str = cfg.schema_
    if name == "auto":
        detected = detect_schema(keys, cfg)
        if detected is None:
            shown = ", ".join(repr(k) for k in keys[:20]) + (", ..." if len(keys) > 20 else "")
            raise InputError(
                f"cannot detect the schema from the first record's field names ({shown}); "
                "set data.schema (amazon2014, amazon2023, generic with data.fields)",
                path=path,
            )
        name = detected
    user_required = cfg.privacy_unit == "user"
    rating = "rating"
    if name == "amazon2014":
        codes = [_code(cfg, rating, "overall", RATINGS)]
        if "category" in keys:
            codes.append(_code(cfg, "category", "category", AMAZON_2014_CATEGORIES))
        return Schema(
            name,
            text="reviewText",
            title="summary",
            user="reviewerID",
            item="asin",
            codes=codes,
            user_required=user_required,
        )
    if name == "amazon2023":
        if "history" in keys:
            codes = [_code(cfg, rating, "rating", RATINGS), _category_2023(cfg, "category")]
            return NestedSchema2023(codes, user_required=user_required)
        codes = [_code(cfg, rating, "rating", RATINGS)]
        if cfg.meta_path is not None:
            codes.append(_code(cfg, "category", "parent_asin", AMAZON_2023_CATEGORIES, via_item=_load_meta(cfg)))
        elif "main_category" in keys or "category" in keys:
            codes.append(_category_2023(cfg, "main_category" if "main_category" in keys else "category"))
        return Schema(
            name,
            text="text",
            title="title",
            user="user_id",
            item="parent_asin",
            codes=codes,
            user_required=user_required,
        )
    if name == "yelp":
        if user_required:
            raise ConfigError(
                "the yelp schema has no user id: set data.privacy_unit=record (each review is one privacy unit)"
            )
        codes = [
            _prefixed(cfg, "category", "label1", YELP_CATEGORIES, YELP_CATEGORY_PREFIX),
            _prefixed(cfg, rating, "label2", RATINGS, YELP_RATING_PREFIX),
        ]
        return Schema(name, text="text", title=None, user=None, item=None, codes=codes, user_required=False)
    fields = cfg.fields
    if user_required and fields.user is None:
        raise ConfigError(
            "data.privacy_unit=user needs data.fields.user (the column of the user id) with schema generic"
        )
    codes = []
    for code, column in fields.codes.items():
        if code not in cfg.code_domains:
            raise ConfigError(
                f"control code {code!r} has no public domain: set data.code_domains.{code} "
                "(a domain read off the private data would not be differentially private)"
            )
        codes.append(_code(cfg, code, column, ()))
    return Schema(
        "generic",
        text=fields.text,
        title=fields.title,
        user=fields.user,
        item=fields.item,
        codes=codes,
        user_required=user_required,
    )
