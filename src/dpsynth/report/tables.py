"""Parsing metrics.json's ``tables`` into checked structures (a malformed row is dropped, never a crash).

Each table in metrics.json is ``{"columns": [...], "rows": [...]}``; rows are positional, so they are read by column
name here, once, and the sections and the summary use the same parsed result.

Quality rows may hold counts or rates per category: JSON keeps integers and floats apart, so an integer is a count
and a float in [0, 1] is a rate; the other is derived from the row's ``n``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dpsynth.report.fmt import is_number
from dpsynth.report.inputs import as_map

CANARY_COLUMNS = ["Name", "Street", "Phone", "Canary"]


def rows_as_dicts(table: Any) -> list[dict[str, Any]]:
    """The rows of ``{"columns", "rows"}`` as dicts by column name; rows of the wrong length are skipped."""
    t = as_map(table)
    columns = t.get("columns")
    rows = t.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list):
        return []
    return [dict(zip(columns, r, strict=True)) for r in rows if isinstance(r, list) and len(r) == len(columns)]


@dataclass
class CanaryTable:
    columns: list[str]
    rows: dict[str, list[int]]
    n_canaries: Any
    n_synthetic: Mapping[str, Any]
    shape_rows: dict[str, list[int]] = field(default_factory=dict)  # records with canary-shaped fields, per arm
    shape_base: tuple[int, list[int]] | None = None  # (n, counts) of the real test split: the base rate


def canary_table(table: Any) -> CanaryTable | None:
    t = as_map(table)
    given = t.get("columns")
    columns: list[Any] = given if isinstance(given, list) else CANARY_COLUMNS
    rows = _count_rows(t.get("rows"), len(columns))
    if not rows:
        return None
    base = as_map(t.get("shape_base_rate"))
    base_row = _count_rows({"real": base.get("row")}, len(columns)).get("real")
    n_base = base.get("n")
    return CanaryTable(
        [str(c) for c in columns],
        rows,
        t.get("n_canaries"),
        as_map(t.get("n_synthetic")),
        _count_rows(t.get("shape_rows"), len(columns)),
        (int(n_base), base_row) if base_row is not None and is_number(n_base) else None,
    )


def _count_rows(rows: Any, width: int) -> dict[str, list[int]]:
    return {
        str(arm): [int(v) for v in counts]
        for arm, counts in as_map(rows).items()
        if isinstance(counts, list) and len(counts) == width and all(is_number(v) for v in counts)
    }


def canary_rows(table: Any) -> tuple[list[str], dict[str, list[int]]] | None:
    parsed = canary_table(table)
    return None if parsed is None else (parsed.columns, parsed.rows)


def mia_rows(table: Any) -> list[dict[str, Any]]:
    """MIA rows with keys ``arm, attack, auc, tpr`` (``tpr``: TPR at 1% FPR)."""
    out = []
    for r in rows_as_dicts(table):
        if "arm" in r:
            row = {"arm": str(r["arm"]), "attack": str(r.get("attack", ""))}
            out.append({**row, "auc": r.get("auc"), "tpr": r.get("tpr_at_1pct_fpr")})
    return out


def utility_rows(table: Any) -> list[dict[str, Any]]:
    return [r for r in rows_as_dicts(table) if {"source", "family", "task"} <= r.keys()]


def utility_accuracy(table: Any) -> tuple[dict[tuple[str, str], dict[str, float]], dict[str, float]]:
    """``accuracy[(family, task)][source]`` (numbers only) and the majority-class accuracy per task."""
    acc: dict[tuple[str, str], dict[str, float]] = {}
    for r in utility_rows(table):
        if is_number(r.get("accuracy")):
            acc.setdefault((str(r["family"]), str(r["task"])), {})[str(r["source"])] = float(r["accuracy"])
    majority = {str(k): float(v) for k, v in as_map(as_map(table).get("majority_accuracy")).items() if is_number(v)}
    return acc, majority


@dataclass
class QualityTable:
    categories: list[str]
    rows: dict[str, tuple[int | None, dict[str, int | None], dict[str, float | None]]]  # arm -> (n, counts, rates)
    definitions: Mapping[str, Any]


def quality_rows(table: Any) -> QualityTable | None:
    t = as_map(table)
    columns = t.get("columns")
    if not isinstance(columns, list) or "arm" not in columns:
        return None
    categories = [str(c) for c in columns if c not in ("arm", "n")]
    rows: dict[str, tuple[int | None, dict[str, int | None], dict[str, float | None]]] = {}
    for r in rows_as_dicts(t):
        n_raw = r.get("n")
        n = int(n_raw) if is_number(n_raw) else None
        counts: dict[str, int | None] = {}
        rates: dict[str, float | None] = {}
        for c in categories:
            v = r.get(c)
            if isinstance(v, float) and 0.0 <= v <= 1.0:
                rates[c] = v
                counts[c] = round(v * n) if n else None
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                counts[c] = int(v)
                rates[c] = v / n if n else None
            else:
                counts[c], rates[c] = None, None
        rows[str(r["arm"])] = (n, counts, rates)
    if not rows:
        return None
    return QualityTable(categories, rows, as_map(t.get("definitions")))
