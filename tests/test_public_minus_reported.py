"""``bench/public_minus_reported.py``: a public warm start's category file loses every review the frontier treats as
private (the same text up to case and spacing, or the same reviewer on the same product), and nothing else."""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "public_minus_reported.py"
FIELDS = ["reviewerID", "asin", "reviewText", "overall"]


def _write(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows({"reviewerID": u, "asin": a, "reviewText": t, "overall": "5.0"} for u, a, t in rows)
    return path


def test_reported_reviews_are_dropped_and_the_rest_kept_verbatim(tmp_path):
    public = _write(
        tmp_path / "public.csv.gz",
        [
            ("u1", "p1", "Great charger, works fast."),  # the same review in both files
            ("u2", "p2", "great   CHARGER, works fast."),  # the same words up to case and spacing
            ("u3", "p3", "Edited later: the case cracked."),  # the same reviewer and product, edited text
            ("u4", "p4", "A cable that lasts."),  # public only
            ("", "", "No ids, another text."),  # missing ids match no reported review's missing ids
        ],
    )
    reported = _write(
        tmp_path / "reported.csv.gz",
        [
            ("u1", "p1", "Great charger, works fast."),
            ("u3", "p3", "The case cracked."),
            ("u9", "p9", "Other."),
            ("", "", "A reported review without ids."),
        ],
    )
    out = tmp_path / "out" / "kept.csv.gz"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--public", str(public), "--reported", str(reported), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    with gzip.open(out, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == FIELDS
        kept = list(reader)
    assert [(r["reviewerID"], r["reviewText"]) for r in kept] == [
        ("u4", "A cable that lasts."),
        ("", "No ids, another text."),
    ]
    assert done.stdout.startswith("3 of 5 public reviews are in the reported set")
    assert "charger" not in done.stdout.lower() and "cracked" not in done.stdout  # counts only, no review text
