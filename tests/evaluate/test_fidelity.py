from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.evaluate.embeddings import embed
from dpsynth.evaluate.fidelity import (
    code_fidelity,
    correlation_difference,
    correlation_matrix,
    fit_sentiment,
    length_fidelity,
    nearest_real_similarity,
    numeric_divergence,
    smoothed_kl,
    token_lengths,
    unigram_fidelity,
)
from dpsynth.evaluate.mauve_metric import mauve_from_curve, mauve_score

REVIEWS = [
    "Great case, fits my phone perfectly.",
    "The charger stopped working after a week.",
    "Battery life is excellent and the screen is bright.",
    "Terrible quality, the strap broke on day one.",
    "Works as described, would buy again.",
]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_distributions_have_zero_divergence():
    values = np.random.default_rng(0).normal(size=300)
    out = numeric_divergence(values, values.copy())
    assert out["kl"] == 0.0 and out["wasserstein"] == 0.0
    assert smoothed_kl([5, 0, 2], [5, 0, 2]) == 0.0


def test_shift_gives_its_wasserstein_distance():
    values = np.random.default_rng(1).normal(size=500)
    out = numeric_divergence(values, values + 3.0)
    assert out["wasserstein"] == pytest.approx(3.0)
    assert out["kl"] > 1.0
    assert out["synthetic_mean"] - out["real_mean"] == pytest.approx(3.0)


def test_kl_known_value_and_direction():
    # (2/3, 1/3) vs (1/3, 2/3) after add-one smoothing: ln(2)/3 either way.
    assert smoothed_kl([1, 0], [0, 1]) == pytest.approx(math.log(2) / 3)
    # without smoothing, KL(p || q) with p = (1/2, 1/2), q = (1/4, 3/4)
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert smoothed_kl([1, 1], [1, 3], alpha=0) == pytest.approx(expected)


def test_length_in_tokens(tokenizer):
    same = length_fidelity(REVIEWS, list(REVIEWS), tokenizer)
    assert same["kl"] == 0.0 and same["wasserstein"] == 0.0
    longer = [t + " ok ok ok ok ok" for t in REVIEWS]
    diff = token_lengths(longer, tokenizer) - token_lengths(REVIEWS, tokenizer)
    assert len(set(diff.tolist())) == 1  # every text grew by the same number of tokens
    assert length_fidelity(REVIEWS, longer, tokenizer)["wasserstein"] == pytest.approx(float(diff[0]))


def test_rating_codes_numeric_metric():
    same = code_fidelity([1, 5, 5, 3], [5, 3, 1, 5], domain=[1, 2, 3, 4, 5])
    assert same["kl"] == 0.0 and same["wasserstein"] == 0.0 and same["tvd"] == 0.0
    shifted = code_fidelity([1, 1, 1, 1], [3, 3, 3, 3], domain=[1, 2, 3, 4, 5])
    assert shifted["wasserstein"] == pytest.approx(2.0)
    assert shifted["tvd"] == pytest.approx(1.0)
    assert shifted["ground_metric"] == "numeric"
    assert shifted["real_freq"] == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_category_codes_discrete_metric_equals_tvd():
    domain = ["Toys", "Electronics", "Home"]
    out = code_fidelity(["Toys", "Toys", "Home", "Home"], ["Toys", "Electronics", "Electronics", "Home"], domain)
    assert out["ground_metric"] == "discrete"
    assert out["tvd"] == pytest.approx(0.5)  # 0.5 * (|.5-.25| + |0-.5| + |.5-.25|)
    assert out["wasserstein"] == out["tvd"]
    with pytest.raises(ValueError, match="outside the domain"):
        code_fidelity(["Toys"], ["Garden"], domain)


def test_unigram_fidelity():
    same = unigram_fidelity(REVIEWS, list(reversed(REVIEWS)))
    assert same["kl"] == pytest.approx(0.0, abs=1e-12) and same["wasserstein"] == pytest.approx(0.0, abs=1e-12)
    disjoint = ["zebra xylophone quokka"] * 20
    other = unigram_fidelity(REVIEWS, disjoint)  # the vocabulary holds every real word: all synthetic mass is "other"
    assert other["real_oov_rate"] == 0.0 and other["synthetic_oov_rate"] == 1.0
    counts = Counter(w for t in REVIEWS for w in t.lower().replace(",", " ").replace(".", " ").split())
    v, n_real, n_syn = len(counts), sum(counts.values()), 60
    p = [(c + 1) / (n_real + v + 1) for c in counts.values()] + [1 / (n_real + v + 1)]
    q = [1 / (n_syn + v + 1)] * v + [(n_syn + 1) / (n_syn + v + 1)]
    assert other["kl"] == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q, strict=True)))
    assert unigram_fidelity(REVIEWS, disjoint, alpha=0.01)["kl"] > 3.0
    assert other["wasserstein"] > 0.3
    small = unigram_fidelity(REVIEWS, disjoint, top_k=10)
    assert small["vocabulary_size"] == 10 and 0 < small["real_oov_rate"] < 1


def test_nearest_neighbour_similarity_copies_vs_fresh():
    rng = np.random.default_rng(2)
    real = _unit(rng.normal(size=(200, 16)))
    copies = nearest_real_similarity(real, real.copy(), seed=0)
    # half of the copies come from the pool (similarity 1), the other half are held-out records
    assert np.isclose(copies["synthetic"], 1.0, atol=1e-5).mean() == pytest.approx(0.5)
    # the reference never compares a record with itself
    assert copies["reference"].max() < 0.99
    assert len(copies["reference"]) == 100
    fresh = nearest_real_similarity(real, _unit(rng.normal(size=(100, 16))), seed=0)
    assert abs(fresh["synthetic_median"] - fresh["reference_median"]) < 0.1


def test_mauve_on_constructed_features():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(200, 8)).astype(np.float32)
    assert mauve_score(p, p.copy()) > 0.99
    far = rng.normal(size=(200, 8)).astype(np.float32) + 6.0
    assert mauve_score(p, far) < 0.1


def test_mauve_curve_integration_matches_library_without_ties():
    import mauve

    rng = np.random.default_rng(5)
    p, q = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 0.5
    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=10, kmeans_num_redo=1)
    assert mauve_from_curve(out.divergence_curve) == pytest.approx(out.mauve, abs=1e-12)


def test_mauve_on_sentence_embeddings(embedder):
    phones = [
        f"The {a} {b} {c}."
        for a, b, c in itertools.product(
            ["new", "cheap", "blue", "sturdy", "slim"],
            ["phone case", "charger", "screen protector", "headset"],
            ["works well", "broke quickly"],
        )
    ]
    cooking = [
        f"{a} the {b} for {c} minutes."
        for a, b, c in itertools.product(
            ["Boil", "Stir", "Bake", "Simmer", "Fry"], ["onions", "pasta", "rice", "beans"], ["five", "ten"]
        )
    ]
    p, q = embed(phones, model=embedder), embed(cooking, model=embedder)
    assert mauve_score(p, p.copy()) > 0.95
    assert mauve_score(p, q) < 0.3


def test_correlation_matrix_and_difference():
    rating = [1, 2, 2, 3, 4, 5, 5]
    length = [10, 20, 20, 35, 40, 80, 80]  # same order and ties as rating: Spearman 1
    sentiment = [5, 4, 4, 3, 2, 1, 1]  # reversed: Spearman -1
    real = {"rating": rating, "length": length, "sentiment": sentiment}
    m = correlation_matrix(real)
    assert m[0, 1] == pytest.approx(1.0) and m[0, 2] == pytest.approx(-1.0)
    assert correlation_difference(real, dict(real))["frobenius"] == 0.0
    flipped = {"rating": rating, "length": length, "sentiment": [-s for s in sentiment]}
    out = correlation_difference(real, flipped)
    assert out["max_abs"] == pytest.approx(2.0)  # rating-sentiment goes from -1 to +1
    assert out["frobenius"] == pytest.approx(math.sqrt(4 * 2.0**2))  # two pairs x two symmetric entries
    constant = {"rating": [3] * 7, "length": length, "sentiment": sentiment}
    assert correlation_matrix(constant)[0].tolist() == [1.0, 0.0, 0.0]


def test_sentiment_model_tracks_rating():
    rng = np.random.default_rng(4)
    direction = _unit(rng.normal(size=(1, 16)))[0]
    ratings = rng.integers(1, 6, size=300)
    emb = _unit(np.outer(ratings - 3, direction) + 0.3 * rng.normal(size=(300, 16)))
    score = fit_sentiment(emb[:200], ratings[:200])
    s = score(emb[200:])
    assert s.shape == (100,) and np.all((s >= 1) & (s <= 5))
    assert np.corrcoef(s, ratings[200:])[0, 1] > 0.8
    with pytest.raises(ValueError, match="two distinct ratings"):
        fit_sentiment(emb[:10], [5] * 10)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=2, max_size=10), st.data())
def test_smoothed_kl_is_non_negative_and_zero_only_on_equal_counts(p, data):
    q = data.draw(st.lists(st.integers(0, 20), min_size=len(p), max_size=len(p)))
    kl = smoothed_kl(p, q)
    assert kl >= -1e-12
    if p == q:
        assert kl == 0.0
