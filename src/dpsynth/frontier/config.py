"""Configuration of ``dpsynth frontier``: which privacy levels, how many synthetic records, which labels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from dpsynth._base import Section

Level = float | Literal["inf"]
Classifier = Literal["embedding", "tfidf"]
CLASSIFIERS: tuple[Classifier, ...] = ("embedding", "tfidf")
DEFAULT_LEVELS: list[Level] = [0.0, 1.0, 4.0, 8.0, "inf"]

QUICK_OVERRIDES: tuple[str, ...] = (
    "data.demo_records=160",
    "data.max_tokens=48",
    "train.batch_size=8",
    "train.physical_batch_size=8",
    "train.max_steps=2",
    "generate.max_new_tokens=32",
    "generate.batch_size=16",
    "frontier.n_synthetic=16",
    "evaluate.max_records=60",
)
"""What ``--quick`` sets before the user's overrides: a smoke run of the whole sweep (shapes, ledger charges), not a
measurement. With SmolLM2 on 2 CPU cores it takes a few minutes."""


def parse_level(value: object) -> Level:
    """A privacy level: a non-negative number, or ``inf`` (no DP).

    >>> parse_level("inf"), parse_level("4"), parse_level(0)
    ('inf', 4.0, 0.0)
    """
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return "inf"
    try:
        eps = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"privacy level {value!r} is not a number or inf") from None
    if eps == float("inf"):
        return "inf"
    if eps < 0 or eps != eps:
        raise ValueError(f"privacy level {value!r} must be >= 0")
    return eps


class FrontierConfig(Section):
    """A privacy-utility sweep: the same private data, test split and classifiers at every privacy level.

    Rows: ``eps = 0`` (the pretrained model prompted with codes drawn uniformly from their public domain: no private
    data at all, the floor), each ``eps > 0`` (a DP fine-tuning release, charged to the ledger), ``inf`` (the same
    fine-tuning without DP) and ``real`` (``n_synthetic`` real training records, and with ``real_all`` every one).
    """

    eps: list[Level] = Field(default_factory=lambda: list(DEFAULT_LEVELS), description="privacy levels (0 and inf too)")
    n_synthetic: int = Field(1000, gt=0, description="synthetic records per row (and real records of the real row)")
    real_all: bool = Field(True, description="also a row trained on every real training record")
    draws: int = Field(
        1,
        ge=1,
        description="independent draws of n_synthetic records per generated row, each scored on its own: the "
        "table gives their mean, each draw's figure beside it. One draw's figures move with the sampling (the same "
        "Amazon eps-8 arm generating twice: MAUVE 0.621 and 0.538, sentiment 92.0% and 98.2% of real; "
        "bench/results/frontier-amazon-cellphones-5k-auto/seed1-auto/), which no single draw's error bar shows. A "
        "fine-tuned row generates draws x n_synthetic records once (codes drawn independently per record), so its "
        "draws are "
        "disjoint slices; real rows stay one draw; generator=pe takes 1",
    )
    labels: list[str] | None = Field(
        None, description="labels to classify (default: every code, and sentiment derived from a rating)"
    )
    classifiers: list[Classifier] = Field(default_factory=lambda: list(CLASSIFIERS))
    mauve_repeats: int = Field(
        5,
        ge=1,
        description="MAUVE is the mean over this many draws (a subsample of equal size from each side and a k-means "
        "seed each), reported with its standard deviation: one draw of the Yelp sweep's non-DP row ranged 0.42-0.62 "
        "(1: the single draw of sweeps before 2026-12-03)",
    )

    @field_validator("eps", mode="before")
    @classmethod
    def _levels(cls, v: object) -> list[Level]:
        items = v.split(",") if isinstance(v, str) else v
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError("give a list of privacy levels, e.g. [0, 1, 4, 8, inf]")
        levels = [parse_level(x) for x in items]
        if len(set(levels)) != len(levels):
            raise ValueError("a privacy level is listed twice")
        return levels
