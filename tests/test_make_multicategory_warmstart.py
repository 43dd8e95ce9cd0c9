"""``bench/make_multicategory_warmstart.py``: public warm-start data with many categories, holding out every category
a proxy or frontier reports on and every review whose text is also filed under one of them."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "make_multicategory_warmstart.py"
COLUMNS = ["reviewerID", "asin", "reviewText", "overall"]


def _csv(path: Path, rows: list[tuple[str, str, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({"reviewerID": u, "asin": "p", "reviewText": t, "overall": str(s)} for u, t, s in rows)


def _user(user_id: str, category: str, reviews: list[tuple[str, float]]) -> str:
    history = [{"review_full": t, "rating": s, "product": {"main_category": None}} for t, s in reviews]
    return json.dumps({"user_id": user_id, "category": category, "history": history})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "amazon"
    _csv(root / "categories_2014" / "Home_and_Kitchen.csv.gz", [("h1", "A good pan.", 5.0), ("h2", "Dull knife.", 2.0)])
    _csv(root / "categories_2014" / "Electronics.csv.gz", [("e1", "Cross listed  TEXT here.", 4.0)])
    with gzip.open(root / "cellphones_5core_2014.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"reviewerID": "c1", "reviewText": "A phone case from 2014."}) + "\n")
    (root / "reviews_2023").mkdir()
    splits = {
        "training": [
            _user("u1", "Pet_Supplies", [("The dog loves it.", 5.0), ("cross listed text HERE.", 3.0)]),
            _user("u2", "Electronics", [("Held-out category text.", 1.0)]),
        ],
        "validation": [_user("u3", "Software", [("Crashes often.", 1.0), ("", 4.0)])],
        "test": [_user("u4", "Automotive", [("A phone case from 2014.", 4.0)])],
    }
    for split, lines in splits.items():
        with gzip.open(root / "reviews_2023" / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    return root


def _run(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_held_out_categories_and_cross_listed_texts_are_left_out(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "multi.csv.gz"
    done = _run(data, out, "--home", "1")
    assert done.returncode == 0, done.stderr
    with gzip.open(out, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["text", "rating", "category", "user"]
        rows = list(reader)
    kept = sorted((r["category"], r["text"], r["rating"]) for r in rows if r["category"] != "Home_and_Kitchen")
    # Electronics (held out) is gone, the cross-listed text (an Electronics 2014 review) and the 5-core Cell Phones
    # text are dropped, the empty review is skipped
    assert kept == [("Pet_Supplies", "The dog loves it.", "5"), ("Software", "Crashes often.", "1")]
    home = [r for r in rows if r["category"] == "Home_and_Kitchen"]
    assert len(home) == 1 and home[0]["text"] in {"A good pan.", "Dull knife."}
    assert "2 cross-listed texts dropped" in done.stdout
    assert "dog" not in done.stdout  # counts only, no review text


def test_no_home_and_an_existing_output_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "multi.csv.gz"
    assert _run(data, out, "--home", "0", "--hold-out", "").returncode == 0
    with gzip.open(out, "rt", encoding="utf-8", newline="") as f:
        categories = sorted(r["category"] for r in csv.DictReader(f))
    # no category held out: Electronics stays with the text it shares with a 2014 Electronics review (that file is
    # no longer read), but the Cell Phones 5-core text is always dropped (the frontier's private set)
    assert categories == ["Electronics", "Pet_Supplies", "Pet_Supplies", "Software"]
    again = _run(data, out)
    assert again.returncode != 0 and "exists" in again.stderr
