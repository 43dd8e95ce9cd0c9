"""Small input files for the prepare-stage tests, in every supported format (``.gz`` in the name: compressed)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_csv(path: Path, rows: Sequence[dict[str, Any]], header: Sequence[str] | None = None) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(header or rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_parquet(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(list(rows)), sink)
    data = sink.getvalue()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


WRITERS: dict[str, Callable[[Path, Sequence[dict[str, Any]]], Path]] = {
    "jsonl": write_jsonl,
    "csv": write_csv,
    "parquet": write_parquet,
}


def review_2014(i: int, user: str | None = None, rating: float = 4.0, text: str | None = None, **extra: Any) -> dict:
    """A row in the Amazon 2014 format with a distinct text."""
    row = {
        "reviewerID": user or f"U{i}",
        "asin": f"B{i:05d}",
        "reviewText": text or f"Review number {i}: the case fits well and the buttons still click after a month.",
        "overall": rating,
        "summary": f"Title {i}",
    }
    row.update(extra)
    return row
