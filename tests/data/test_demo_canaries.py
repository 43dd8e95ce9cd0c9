"""The built-in demo data and the canaries."""

from __future__ import annotations

import random
from collections import Counter

from dpsynth.data.canaries import (
    SECRET_FORMAT,
    Canary,
    canary_count,
    canary_text,
    make_canaries,
    random_secret,
)
from dpsynth.data.categories import AMAZON_2014_CATEGORIES
from dpsynth.data.demo import DEMO_CATEGORIES, demo_records, sentiment
from dpsynth.data.records import CodeSpec

SPECS = [CodeSpec("rating", (1, 2, 3, 4, 5)), CodeSpec("category", ("Books", "Electronics", "Toys_and_Games"))]
POSITIVE = ("love", "exactly what I needed", "happy", "Best", "Great", "exceeded")
NEGATIVE = ("regret", "Do not buy", "disappointed", "stopped working", "skip")


def test_demo_is_seeded_and_shaped_like_reviews():
    rows = demo_records(300, seed=3)
    assert rows == demo_records(300, seed=3)
    assert rows != demo_records(300, seed=4)
    assert all(set(r) == {"text", "title", "rating", "category", "user_id", "item_id"} for r in rows)
    assert set(DEMO_CATEGORIES) <= set(AMAZON_2014_CATEGORIES)
    assert {r["category"] for r in rows} == set(DEMO_CATEGORIES)
    ratings = Counter(r["rating"] for r in rows)
    assert set(ratings) == {1, 2, 3, 4, 5} and ratings[5] > ratings[1]


def test_demo_sentiment_matches_rating():
    for r in demo_records(200, seed=0):
        opener = r["text"].split(".")[0]
        if sentiment(r["rating"]) == "pos":
            assert any(w in opener for w in POSITIVE), opener
            assert not any(w in opener for w in NEGATIVE), opener
        elif sentiment(r["rating"]) == "neg":
            assert any(w in opener for w in NEGATIVE), opener


def test_demo_users_write_several_reviews_and_texts_vary():
    rows = demo_records(400, seed=0)
    per_user = Counter(r["user_id"] for r in rows)
    assert len(per_user) > 120  # enough units for user-level DP on the default size
    assert sum(1 for n in per_user.values() if n >= 2) > 50
    assert len({r["text"] for r in rows}) > 0.97 * len(rows)
    openers = Counter(r["text"].split(".")[0] for r in rows)
    assert openers.most_common(1)[0][1] < 0.05 * len(rows)


def test_demo_has_personal_details_sometimes():
    rows = demo_records(400, seed=0)
    asides = [r for r in rows if any(k in r["text"] for k in ("Shipping to", "We live in", "I'm ", "gift for", "my "))]
    assert 0.05 * len(rows) < len(asides) < 0.5 * len(rows)


def test_canaries_carry_all_fields_and_a_well_formed_secret():
    canaries = make_canaries(5, seed=0, code_specs=SPECS)
    assert [c.unit for c in canaries] == [f"canary-{i}" for i in range(5)]
    assert len({c.secret for c in canaries}) == 5
    for c in canaries:
        assert c.name and c.street and c.phone
        assert SECRET_FORMAT == "6 digits" and len(c.secret) == 6 and c.secret.isdigit()
        assert c.text == c.prefix + c.secret + c.suffix and c.text.count(c.secret) == 1
        assert c.name in c.prefix and c.street in c.prefix and c.phone in c.prefix
        assert c.codes["rating"] in (1, 2, 3, 4, 5) and c.codes["category"] in SPECS[1].values
        assert c.with_secret("000000") == c.prefix + "000000" + c.suffix
        assert c.record().unit == c.unit and c.record().text == c.text
        assert Canary.from_json(c.to_json()) == c
        js = c.to_json()
        assert {"unit", "name", "street", "phone", "secret", "text", "codes"} <= set(js)


def test_canaries_are_seeded():
    assert make_canaries(3, seed=1, code_specs=SPECS) == make_canaries(3, seed=1, code_specs=SPECS)
    assert make_canaries(3, seed=1, code_specs=SPECS) != make_canaries(3, seed=2, code_specs=SPECS)


def test_canaries_are_short(tokenizer):
    lengths = [len(tokenizer(c.text)["input_ids"]) for c in make_canaries(30, seed=0, code_specs=SPECS)]
    assert max(lengths) <= 56  # "well under 64": room for the chat template around it


def test_random_secret_format_and_spread():
    rng = random.Random(0)
    secrets = [random_secret(rng) for _ in range(2000)]
    assert all(len(s) == 6 and s.isdigit() for s in secrets)
    assert len(set(secrets)) > 1990
    assert Counter(s[0] for s in secrets)["0"] > 100  # leading zeros are allowed: the space is all 10**6 strings


def test_canary_text_layout():
    text = canary_text("Ann Lee", "1 Main St", "555-010-0000", "012345", "Nice mug.")
    assert text.startswith("Nice mug. ") and text.endswith("My secret code is 012345.")


def test_canary_count():
    assert [canary_count(r, 200) for r in (0.0, 0.001, 0.01, 0.1)] == [0, 1, 2, 20]
