from __future__ import annotations

import math

import numpy as np
import pytest

from dpsynth.evaluate.exposure import canary_exposure, canary_exposures, candidate_secrets, exposure_from_scores

CANARIES = [
    {"unit": f"canary-{i}", "secret": f"{(i * 7919) % 10**6:06d}", "text": f"My code is {(i * 7919) % 10**6:06d}, ok."}
    for i in range(1, 41)
]
SECRETS = {c["secret"] for c in CANARIES}


def test_candidates_have_the_format_and_exclude_the_secret():
    rng = np.random.default_rng(0)
    cands = candidate_secrets("999999", 500, rng)
    assert len(set(cands)) == 500 and "999999" not in cands
    assert all(len(c) == 6 and c.isdigit() for c in cands)
    # a one-digit space: the candidates are exactly the nine other digits
    assert sorted(candidate_secrets("3", 9, rng)) == ["0", "1", "2", "4", "5", "6", "7", "8", "9"]
    with pytest.raises(ValueError):
        candidate_secrets("3", 10, rng)


def test_memorising_scorer_gives_the_cap():
    def memorised(texts):  # NLL 0 for the canary with its true secret, 5 for any other
        return np.array([0.0 if any(s in t for s in SECRETS) else 5.0 for t in texts])

    out = canary_exposures(CANARIES[:5], memorised, num_candidates=200)
    assert out["cap"] == pytest.approx(math.log2(201))
    assert all(p["exposure"] == pytest.approx(math.log2(201)) and p["capped"] for p in out["per_canary"])
    assert out["n_capped"] == 5 and out["space_bits"] == pytest.approx(6 * math.log2(10))


def test_indifferent_and_adverse_scorers():
    flat = canary_exposure(CANARIES[0]["text"], CANARIES[0]["secret"], lambda t: np.ones(len(t)), num_candidates=100)
    assert flat["exposure"] == pytest.approx(math.log2(101 / 51))  # rank 1 + 100/2: about 1 bit
    assert not flat["capped"]
    secret = CANARIES[0]["secret"]
    worst = canary_exposure(
        CANARIES[0]["text"], secret, lambda t: np.array([9.0 if secret in x else 1.0 for x in t]), num_candidates=100
    )
    assert worst["rank"] == 101 and worst["exposure"] == 0.0


def test_random_scorer_gives_about_one_over_ln2():
    rng = np.random.default_rng(0)
    out = canary_exposures(CANARIES, lambda t: rng.normal(size=len(t)), num_candidates=100)
    # the rank is uniform on 1..101: E[log2(101 / rank)] ~ 1/ln 2 - small; 40 canaries: std ~ 0.23
    assert 0.8 < out["mean"] < 2.2
    assert out["n_capped"] <= 3


def test_estimator_counts_ties_as_half():
    out = exposure_from_scores(1.0, [0.5, 1.0, 1.0, 2.0])
    assert out["rank"] == 3.0 and out["exposure"] == pytest.approx(math.log2(5 / 3))


def test_secret_must_occur_once():
    with pytest.raises(ValueError, match="exactly once"):
        canary_exposure("code 111111 and 111111", "111111", lambda t: np.zeros(len(t)))
