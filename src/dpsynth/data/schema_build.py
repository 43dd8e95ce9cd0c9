"""Building the :class:`~dpsynth.data.schemas.Schema` of a file: detecting a built-in schema from the first row's field
names, and mapping each built-in or generic code onto its public domain (``data.code_domains`` may narrow it).

Kept apart from :mod:`dpsynth.data.schemas` (the value types) so that each stays small; see that module for the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
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
from dpsynth.data.records import CodeValue
from dpsynth.data.roles import code_roles, resolve_label
from dpsynth.data.schemas import CodeField, NestedSchema2023, Schema, _as_id, _present
from dpsynth.errors import ConfigError, InputError


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
