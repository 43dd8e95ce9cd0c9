"""Build a PUBLIC proxy with a category code: Amazon 2014 reviews of four categories in unequal shares.

Yelp's category code is skewed (one category holds most reviews), and whether DP rows should generate codes from
the released histogram or a flattened one is a generation setting that must be chosen on public data. No Amazon
category file is one-sided, so this script mixes four of them (none that a frontier reports on or that the public
warm start was fitted to) in fixed shares, 55/20/15/10 of 5,000 reviews, a generic one-dominant-class design chosen
before any run, and writes a CSV for the ``generic`` schema (``bench/proxy_categories.yaml``):

    python bench/make_category_proxy.py --out runs/proxy-categories/amazon4.csv.gz
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
from pathlib import Path

SHARES = {
    "Electronics": 2750,
    "Clothing_Shoes_and_Jewelry": 1000,
    "Sports_and_Outdoors": 750,
    "Toys_and_Games": 500,
}
SOURCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon" / "categories_2014"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows: list[dict[str, str]] = []
    for category, n in SHARES.items():
        with gzip.open(args.source / f"{category}.csv.gz", "rt", encoding="utf-8", newline="") as f:
            reviews = [r for r in csv.DictReader(f) if (r.get("reviewText") or "").strip()]
        for r in rng.sample(reviews, n):
            rows.append(
                {
                    "text": r["reviewText"],
                    "rating": str(int(float(r["overall"]))),
                    "category": category,
                    "user": r["reviewerID"],
                }
            )
    rng.shuffle(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "rating", "category", "user"])
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} reviews -> {args.out}")


if __name__ == "__main__":
    main()
