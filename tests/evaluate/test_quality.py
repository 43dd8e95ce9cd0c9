from __future__ import annotations

import pytest

from dpsynth.evaluate.quality import CATEGORIES, classify, default_dictionary, quality_counts

EXAMPLES = {
    "good": "This case fits my phone well and the buttons still work. I would buy it again!",
    "quoted": 'My son said "it is the best charger ever."',
    "gibberish": "Xqvzt plorf snarbik wuzzle a frobnik gweep.",
    "symbols": "### $$$ %%% @@@ 12345 ok.",
    "abrupt": "The screen protector went on easily but after two days the",
    "repetitive": "I love it, I love it, I love it, I love it.",
    "repetitive_abrupt": "good case good case good case good case good case",
    "empty": "",
}


def test_categories_of_hand_written_examples():
    d = default_dictionary()
    flags = {name: classify(text, d) for name, text in EXAMPLES.items()}
    assert flags["good"] == {"well_formed": True, "gibberish": False, "abrupt_ending": False, "repetitive": False}
    assert flags["quoted"]["well_formed"]
    assert flags["gibberish"]["gibberish"] and not flags["gibberish"]["abrupt_ending"]
    assert flags["symbols"]["gibberish"]
    assert flags["abrupt"] == {"well_formed": False, "gibberish": False, "abrupt_ending": True, "repetitive": False}
    assert flags["repetitive"]["repetitive"] and not flags["repetitive"]["abrupt_ending"]
    assert flags["repetitive_abrupt"]["repetitive"] and flags["repetitive_abrupt"]["abrupt_ending"]
    assert flags["empty"]["gibberish"] and flags["empty"]["abrupt_ending"]


def test_counts_rates_examples_and_definitions():
    texts = list(EXAMPLES.values())
    out = quality_counts(texts)
    assert out["n"] == 8
    assert out["counts"] == {"well_formed": 2, "gibberish": 3, "abrupt_ending": 3, "repetitive": 2}
    assert out["rates"]["well_formed"] == pytest.approx(2 / 8)
    assert out["examples"]["well_formed"] == [0, 1]
    assert set(out["definitions"]) == set(CATEGORIES)
    assert "3-gram" in out["definitions"]["repetitive"]
    assert out["parameters"]["dictionary_size"] > 20_000
    assert quality_counts(texts, max_records=2)["counts"]["well_formed"] == 2


def test_thresholds_are_parameters():
    text = "great case, great case, great case."  # the 2-gram "great case" occurs three times
    assert not quality_counts([text])["counts"]["repetitive"]
    assert quality_counts([text], ngram=2)["counts"]["repetitive"] == 1
    # a custom dictionary: every word unknown makes the text gibberish
    assert quality_counts(["Nice phone."], dictionary=["cat"])["counts"]["gibberish"] == 1
    assert quality_counts([])["rates"]["well_formed"] is None
