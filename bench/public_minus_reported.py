"""Drop from a PUBLIC Amazon 2014 category file every review that a frontier reports on: benchmark hygiene for a
public warm start taken from a neighbouring category.

Amazon lists some products under two categories, so the same review can sit in two category files. Against the Cell
Phones reviews that ``bench/frontier_amazon_cellphones_5k.yaml`` treats as private, 11 of the 5,000 Electronics
reviews match: 9 the same reviewer, product and text, 1 the same reviewer's text on another product, 1 a
four-character text that another user also wrote. A warm start fitted WITHOUT DP on them would train on records the
sweep protects (and tests on), so they are removed before fitting (the Electronics warm start of
``bench/results/frontier-amazon-cellphones-5k-electronics-warm/``). The check is per review: about as many other
Electronics reviews by people who are also Cell Phones reviewers stay, as public reviews of other products. This is a
benchmark step, not a library feature: it reads the set the frontier treats as private, which is why it runs before
and apart from any DP run and writes nothing but the filtered public file and counts. A deployment's public data is
whatever it is; what the frontier claims is only that no review of the reported set reached the model outside DP-SGD.

    python bench/public_minus_reported.py --out runs/public-electronics-data/electronics.csv.gz
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon" / "categories_2014"


def _key_text(text: str) -> str:
    return " ".join(text.split()).lower()


def _keys(row: dict[str, str]) -> tuple[str, tuple[str, str]]:
    """A review's text key and its (reviewer, product) key, empty strings where a field is missing."""
    return _key_text(row.get("reviewText") or ""), (
        (row.get("reviewerID") or "").strip(),
        (row.get("asin") or "").strip(),
    )


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--public", type=Path, default=SOURCE / "Electronics.csv.gz")
    ap.add_argument("--reported", type=Path, nargs="+", default=[SOURCE / "Cell_Phones_and_Accessories.csv.gz"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    texts: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for path in args.reported:
        for r in _read(path)[1]:
            text, pair = _keys(r)
            if text:
                texts.add(text)
            if all(pair):
                pairs.add(pair)
    fields, rows = _read(args.public)
    kept = []
    for r in rows:
        text, pair = _keys(r)
        if text not in texts and pair not in pairs:  # empty keys are never added, so they match nothing
            kept.append(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(kept)
    print(
        f"{len(rows) - len(kept)} of {len(rows)} public reviews are in the reported set and were dropped; "
        f"{len(kept)} -> {args.out}"
    )


if __name__ == "__main__":
    main()
