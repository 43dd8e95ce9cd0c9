"""Configuration of the ``prepare`` stage: which file, which schema, how to clean, bound and split it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from dpsynth._base import Section


class FieldMap(Section):
    """Column names for the ``generic`` schema (the built-in schemas know their own)."""

    text: str = "text"
    title: str | None = None
    user: str | None = None
    item: str | None = None
    codes: dict[str, str] = Field(default_factory=dict, description="control-code name -> column, e.g. {rating: stars}")


class DataConfig(Section):
    """Where the private records come from and how they become training examples."""

    path: Path | None = Field(None, description="JSONL, CSV or Parquet file (gzip or not); none: built-in demo data")
    schema_: Literal["auto", "amazon2014", "amazon2023", "generic"] = Field("auto", alias="schema")
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    meta_path: Path | None = Field(None, description="Amazon 2023 product metadata, joined on parent_asin")
    fields: FieldMap = Field(default_factory=FieldMap)
    code_domains: dict[str, list[str | int]] = Field(
        default_factory=dict,
        description="public value sets of control codes; needed for codes whose domain the schema does not know",
    )
    max_records: int | None = Field(None, gt=0, description="take the first N usable records")
    min_chars: int = Field(20, ge=1, description="drop texts shorter than this after cleaning")
    max_chars: int | None = Field(None, gt=0, description="drop texts longer than this after cleaning (none: no limit)")
    dedup: bool = Field(True, description="drop exact and normalized duplicate texts (the first occurrence is kept)")
    max_tokens: int = Field(128, gt=0, description="public bound on a response's length in tokens")
    include_title: bool = False
    privacy_unit: Literal["record", "user"] = "user"
    max_records_per_user: int = Field(1, gt=0)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    canary_rate: float = Field(0.0, ge=0, lt=1, description="canaries injected into the training split, per unit")
    demo_records: int = Field(400, gt=0, description="size of the built-in demo data set when no path is given")
    system_prompt: str = "You write realistic customer product reviews."

    @field_validator("path", "meta_path")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(v).expanduser()
