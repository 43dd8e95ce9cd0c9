"""Configuration of the ``prepare`` stage: which file, which schema, how to clean, bound and split it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from dpsynth._base import Section


class FieldMap(Section):
    """Column names for the ``generic`` schema (the built-in schemas know their own)."""

    text: str = "text"
    title: str | None = Field(
        None,
        description="column of a title; read but NOT trained on unless data.include_title=true (prepare says so)",
    )
    user: str | None = None
    item: str | None = None
    codes: dict[str, str] = Field(
        default_factory=dict,
        description="control-code name -> column, e.g. {stars: overall, genre: type}; every code needs its public "
        "domain in data.code_domains",
    )


class DataConfig(Section):
    """Where the private records come from and how they become training examples."""

    path: Path | None = Field(None, description="JSONL, CSV or Parquet file (gzip or not); none: built-in demo data")
    schema_: Literal["auto", "amazon2014", "amazon2023", "yelp", "generic"] = Field("auto", alias="schema")
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    meta_path: Path | None = Field(None, description="Amazon 2023 product metadata, joined on parent_asin")
    test_path: Path | None = Field(
        None,
        description="a separate real test file (same schema): every usable record of data.path is then for training, "
        "and test_fraction is unused (Yelp: dev.csv.gz private, test.csv.gz the test set)",
    )
    max_test_records: int | None = Field(None, gt=0, description="with test_path: keep the first N usable test records")
    fields: FieldMap = Field(default_factory=FieldMap)
    code_domains: dict[str, list[str | int]] = Field(
        default_factory=dict,
        description="public value set of each control code, code name -> list of values in order, e.g. "
        "{stars: [1, 2, 3, 4, 5], genre: [fiction, poetry]}; needed for codes whose domain the schema does not know "
        "(every generic code); a value outside it drops the record (never read a domain off the private data)",
    )
    label: str | None = Field(
        None,
        description="the control code evaluated as the label (correlation preservation, the headline fidelity and "
        "accuracy lines, the LLM classifier's task); none: the code named rating, else the only ordinal code",
    )
    code_roles: dict[str, Literal["ordinal", "nominal"]] = Field(
        default_factory=dict,
        description="role per code, e.g. {stars: ordinal}: ordinal values are ordered as listed in the domain "
        "(distances between positions, correlations), nominal ones are not; default: ordinal when every value of "
        "the domain is a number, else nominal",
    )
    missing_code_value: str | None = Field(
        None,
        description="value given to a code other than the label when its column is empty (e.g. unknown), added to "
        "that code's public domain; none (default): such a record is dropped as incomplete",
    )
    max_records: int | None = Field(None, gt=0, description="keep at most N usable records, chosen by data.sample")
    sample: Literal["random", "first"] = Field(
        "random",
        description="how max_records chooses: random (default), a uniform sample seeded by data.seed (files are "
        "often sorted by product or date, so their first rows are not representative); first: the first N in file "
        "order",
    )
    min_chars: int = Field(20, ge=1, description="drop texts shorter than this after cleaning")
    max_chars: int | None = Field(None, gt=0, description="drop texts longer than this after cleaning (none: no limit)")
    dedup: bool = Field(True, description="drop exact and normalized duplicate texts (the first occurrence is kept)")
    max_tokens: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        128,
        description="bound on a response's length in tokens: a public number, or auto (released with DP from the "
        "private responses' lengths, within the DP arm's target and charged when drawn: dpsynth.train.length; "
        "generation then writes up to the released bound)",
    )
    max_tokens_grid: list[int] = Field(
        [32, 64, 128, 256], min_length=1, description="auto: the public values the released bound is chosen from"
    )
    max_tokens_quantile: float = Field(
        0.5, gt=0, lt=1, description="auto: the bound is the smallest grid value at or above this noisy quantile"
    )
    max_tokens_public: int = Field(
        64,
        gt=0,
        description="auto: the bound where no private data may be read (a frontier's eps 0 row) or the noisy "
        "histogram holds nothing; 64, the public proxy's choice (bench/results/recipe-search/)",
    )
    cut_responses: Literal["token", "sentence"] = Field(
        "sentence",
        description="how a response over max_tokens is cut for training: sentence (default: after its last sentence "
        "within the bound, followed by the end-of-turn token, so the model learns to finish within it; a response "
        "with no sentence end within the bound is cut at the token) or token (at the bound, its end-of-turn not "
        "trained: the rule until 2026-12-03, which left most generated records stopping mid-sentence at the limit)",
    )
    include_title: bool = Field(
        False, description="train on and generate a 'Title: ...' line before the text of records that have a title"
    )
    privacy_unit: Literal["record", "user"] = "user"
    max_records_per_user: int = Field(1, gt=0)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    canary_rate: float = Field(0.0, ge=0, lt=1, description="canaries injected into the training split, per unit")
    demo_records: int = Field(
        2000,
        gt=0,
        description="size of the built-in demo data set when no path is given; 2,000 rows hold about 860 users, of "
        "whom about 690 train (one review each, data.max_records_per_user): fake users cost no privacy, and 136 (the "
        "400-row demo until 2026-12-03) left DP-SGD too little signal (bench/results/demo-recipe/)",
    )
    system_prompt: str = "You write realistic customer product reviews."

    @field_validator("path", "meta_path", "test_path")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return None if v is None else Path(v).expanduser()

    @field_validator("max_tokens_grid")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if v != sorted(set(v)) or v[0] < 1:
            raise ValueError(f"data.max_tokens_grid must be increasing positive token counts, got {v}")
        return v
