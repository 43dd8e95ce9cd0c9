"""Build PUBLIC warm-start data that names many categories, so a warm start learns to follow the category code.

The Home_and_Kitchen warm start (``bench/public_warmstart_amazon.yaml``) sees one category: its every prompt says
"in the category Home and Kitchen", so it teaches the review format and the rating's tone but nothing about the
category phrase, and on Yelp the DP rows barely follow their category code (README, "Against issue 7's targets").
This script mixes that public category with the Amazon Reviews 2023 sample (``reviews_2023``: 23 categories of about
120 reviews and Baby_Products' 4), so that the prompt's category changes from record to record and the text with it.

Categories that a proxy or a frontier reports on are held out (``--hold-out``; by default the skewed-category proxy's
Electronics, Sports_and_Outdoors and Toys_and_Games, and the Cell Phones frontier's Cell_Phones_and_Accessories;
Clothing is not in the 2023 sample), so that on the proxy the warm start must transfer the habit of following a
category to categories it never saw, as it must on Yelp. A kept review whose text (lower-cased, white space folded)
is also in a held-out 2014 category file or the Cell Phones 5-core file is dropped too: Amazon cross-lists products,
so the same review can sit under two categories. Clothing's 2014 file is not read: 2 kept texts are also in it,
neither among the skewed-category proxy's 5,000 records (no kept text is). The output is a CSV for the ``generic``
schema (``bench/public_warmstart_multicategory.yaml``):

    python bench/make_multicategory_warmstart.py --out runs/public-multicat-data/multicat.csv.gz
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
from collections import Counter
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon"
HOLD_OUT = ("Electronics", "Sports_and_Outdoors", "Toys_and_Games", "Cell_Phones_and_Accessories")
FIELDS = ["text", "rating", "category", "user"]


def _key(text: str) -> str:
    return " ".join(text.split()).lower()


def _held_out_texts(data: Path, hold_out: tuple[str, ...]) -> set[str]:
    """Review texts of the held-out 2014 categories and of the Cell Phones 5-core set (cross-listing check)."""
    keys: set[str] = set()
    for category in hold_out:
        path = data / "categories_2014" / f"{category}.csv.gz"
        if path.exists():
            with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
                keys.update(_key(r.get("reviewText") or "") for r in csv.DictReader(f))
    five_core = data / "cellphones_5core_2014.jsonl.gz"
    if five_core.exists():
        with gzip.open(five_core, "rt", encoding="utf-8") as f:
            keys.update(_key(json.loads(line).get("reviewText") or "") for line in f)
    keys.discard("")
    return keys


def _reviews_2023(data: Path, hold_out: tuple[str, ...], seen: set[str]) -> tuple[list[dict[str, str]], int]:
    rows: list[dict[str, str]] = []
    dropped = 0
    for split in ("training", "validation", "test"):
        with gzip.open(data / "reviews_2023" / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                user = json.loads(line)
                if user["category"] in hold_out:
                    continue
                for review in user["history"]:
                    text = (review.get("review_full") or "").strip()
                    if not text:
                        continue
                    if _key(text) in seen:
                        dropped += 1
                        continue
                    rating = str(int(float(review["rating"])))
                    rows.append({"text": text, "rating": rating, "category": user["category"], "user": user["user_id"]})
    return rows, dropped


def _home(data: Path, n: int, rng: random.Random) -> list[dict[str, str]]:
    with gzip.open(data / "categories_2014" / "Home_and_Kitchen.csv.gz", "rt", encoding="utf-8", newline="") as f:
        reviews = [r for r in csv.DictReader(f) if (r.get("reviewText") or "").strip()]
    return [
        {
            "text": r["reviewText"],
            "rating": str(int(float(r["overall"]))),
            "category": "Home_and_Kitchen",
            "user": r["reviewerID"],
        }
        for r in rng.sample(reviews, min(n, len(reviews)))
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--home", type=int, default=2500, help="Home_and_Kitchen 2014 reviews mixed in (0: none)")
    ap.add_argument("--hold-out", default=",".join(HOLD_OUT), help="comma-separated categories left out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose another --out")
    rng = random.Random(args.seed)
    hold_out = tuple(c for c in args.hold_out.split(",") if c)
    rows, dropped = _reviews_2023(args.data, hold_out, _held_out_texts(args.data, hold_out))
    if args.home:
        rows += _home(args.data, args.home, rng)
    rng.shuffle(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    counts = Counter(r["category"] for r in rows)
    print(f"{len(rows)} reviews in {len(counts)} categories -> {args.out} ({dropped} cross-listed texts dropped)")
    for category, n in counts.most_common():
        print(f"  {category}: {n}")


if __name__ == "__main__":
    main()
