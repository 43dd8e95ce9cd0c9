from __future__ import annotations

import numpy as np
import pytest

from dpsynth.evaluate.text_privacy import (
    canary_leakage,
    contains_phone,
    distance_to_closest_record,
    verbatim_overlap,
)

CANARIES = [
    {
        "unit": "canary-0",
        "name": "Mirabel Quenton",
        "street": "48 Larkspur Lane",
        "phone": "(555) 123-4567",
        "secret": "804211",
        "text": "Mirabel Quenton of 48 Larkspur Lane, phone (555) 123-4567, code 804211.",
        "codes": {"rating": 5},
    },
    {
        "unit": "canary-1",
        "name": "Osric Delamere",
        "street": "7 Juniper Court",
        "phone": "555-987-6543",
        "secret": "013579",
        "text": "Osric Delamere of 7 Juniper Court, phone 555-987-6543, code 013579.",
        "codes": {"rating": 1},
    },
]


def test_planted_canary_fields_are_counted():
    no_dp = [
        "Great case. Thanks, mirabel quenton!",  # name, other case
        "Call me at 555.123.4567 about it.",  # phone, other format
        "My code is 804211 and Osric Delamere lives at 7 juniper court.",  # secret + second canary's name and street
        "Order 98042119 arrived late.",  # the secret inside a longer number: no match
        "Mirabella Quentonis liked it.",  # not the whole name: no match
        "Fine product, call 555 987 6543.",  # second canary's phone
    ]
    dp = ["Nice phone case.", "Works fine, 5 stars."]
    out = canary_leakage({"dp": dp, "no_dp": no_dp}, CANARIES)
    assert out["records"]["dp"] == {"Name": 0, "Street": 0, "Phone": 0, "Canary": 0}
    assert out["records"]["no_dp"] == {"Name": 2, "Street": 1, "Phone": 2, "Canary": 1}
    assert out["canaries"]["no_dp"] == {"Name": 2, "Street": 1, "Phone": 2, "Canary": 1}
    assert out["n_synthetic"] == {"dp": 2, "no_dp": 6} and out["n_canaries"] == 2
    # the full canary text leaks all four fields
    full = canary_leakage({"x": [CANARIES[0]["text"]]}, CANARIES)["records"]["x"]
    assert full == {"Name": 1, "Street": 1, "Phone": 1, "Canary": 1}


@pytest.mark.parametrize(
    ("text", "phone", "expected"),
    [
        ("(555) 123-4567", "555.123.4567", True),
        ("+1 555 123 4567", "(555) 123-4567", True),
        ("555-123-4568", "(555) 123-4567", False),
        ("5551234 and then 567", "(555) 123-4567", False),
    ],
)
def test_phone_numbers_match_after_digit_normalisation(text, phone, expected):
    assert contains_phone(text, phone) is expected


def test_copied_record_flagged_paraphrase_not():
    train = [
        "I bought this case for my phone and it cracked after only two weeks of normal use.",
        "The charger works with every cable I own and charges my tablet quickly.",
    ]
    copy = train[0]
    paraphrase = "After two weeks of ordinary use the case I purchased for my phone had a crack in it."
    test = ["The charger works with every cable I have, and it is quick."]
    out = verbatim_overlap(train, [copy, paraphrase], test, n=8)
    assert out["synthetic_flags"].tolist() == [True, False]
    assert out["synthetic_rate"] == 0.5 and out["test_rate"] == 0.0 and out["excess"] == 0.5
    # a shorter n finds the shared 4-word phrase "the charger works with" in the test record
    assert verbatim_overlap(train, [paraphrase], test, n=4)["test_rate"] == 1.0


def test_distance_to_closest_record_copies_vs_fresh():
    rng = np.random.default_rng(0)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    train, test = unit(rng.normal(size=(300, 16))), unit(rng.normal(size=(200, 16)))
    copies = distance_to_closest_record(train, train[:50].copy(), test)
    assert copies["near_copies"] == 50 and copies["share_below_test_p05"] == 1.0
    assert copies["median_ratio"] == pytest.approx(0.0, abs=1e-5)
    fresh = distance_to_closest_record(train, unit(rng.normal(size=(200, 16))), test)
    assert fresh["near_copies"] == 0
    assert 0.8 < fresh["median_ratio"] < 1.25
    assert fresh["share_below_test_p05"] < 0.15
    assert fresh["synthetic"].shape == (200,) and fresh["test"].shape == (200,)
