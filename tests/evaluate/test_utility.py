from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dpsynth.evaluate.dp_logreg import (
    LIPSCHITZ,
    fit_dp_logistic_regression,
    prepare_features,
    sample_noise,
)
from dpsynth.evaluate.utility import (
    LabeledSet,
    classification_scores,
    train_and_test,
    train_on_x_test_on_real,
)

POSITIVE = ["great", "excellent", "love", "perfect", "sturdy", "recommend"]
NEGATIVE = ["broke", "terrible", "refund", "awful", "flimsy", "disappointed"]
FILLER = ["case", "phone", "the", "it", "charger", "screen", "cable", "color", "box", "was", "this", "my"]


def _reviews(n: int, seed: int, *, informative: bool = True) -> LabeledSet:
    """Ratings 1 or 5; an informative review carries two sentiment words of its class among filler words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.choice([1, 5]))
        words = list(rng.choice(FILLER, size=8))
        if informative:
            words += list(rng.choice(POSITIVE if label == 5 else NEGATIVE, size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return LabeledSet(texts, labels)


def _embedded(n: int, seed: int, *, informative: bool = True, dim: int = 16) -> LabeledSet:
    """Constructed "embeddings": class means +-mu on one axis plus noise, unit-normalised."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([1, 5], size=n)
    x = rng.normal(size=(n, dim))
    if informative:
        x[:, 0] += np.where(labels == 5, 2.0, -2.0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return LabeledSet([""] * n, labels.tolist(), embeddings=x)


def test_classification_scores_known_values():
    out = classification_scores([1, 1, 2, 2], [1, 1, 1, 2])
    assert out["accuracy"] == 0.75
    # F1 class 1: p=2/3, r=1 -> 0.8; class 2: p=1, r=1/2 -> 2/3
    assert out["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_tstr_real_beats_noise_on_separable_task():
    train, test = _reviews(200, 0), _reviews(200, 1)
    noise = _reviews(200, 2, informative=False)
    out = train_on_x_test_on_real({"real": train, "no_dp": noise}, test, classes=[1, 5], families=("tfidf",))
    table = out["results"]["tfidf"]
    assert table["real"]["status"] == "ok"
    assert table["real"]["accuracy"] > 0.95 and table["real"]["macro_f1"] > 0.95
    assert abs(table["no_dp"]["accuracy"] - 0.5) < 0.12
    assert 0.35 < out["majority_accuracy"] < 0.65
    # the noise model relies on other words than the real one; a copy of the real data on the same ones
    assert out["feature_importance"]["no_dp"]["spearman"] < 0.2
    copy = LabeledSet(list(train.texts), list(train.labels))
    same = train_on_x_test_on_real({"real": train, "dp": copy}, test, classes=[1, 5], families=("tfidf",))
    assert same["feature_importance"]["dp"]["spearman"] == pytest.approx(1.0)
    assert same["feature_importance"]["dp"]["top_k_overlap"] == 1.0


def test_tstr_embedding_family_with_given_embeddings():
    train, test = _embedded(200, 0), _embedded(200, 1)
    noise = _embedded(200, 2, informative=False)
    out = train_on_x_test_on_real({"real": train, "dp": noise}, test, classes=[1, 5], families=("embedding",))
    table = out["results"]["embedding"]
    assert table["real"]["accuracy"] > 0.9
    assert abs(table["dp"]["accuracy"] - 0.5) < 0.12
    assert out["feature_importance"] == {}


def test_tstr_embedding_family_with_the_embedding_model(embedder):
    pos = ["I love this case, it is perfect.", "Excellent charger, works great.", "Great phone, highly recommend."]
    neg = ["Terrible case, it broke in a day.", "Awful charger, stopped working.", "Flimsy and disappointing, refund."]
    train = LabeledSet(pos + neg, [5, 5, 5, 1, 1, 1])
    test = LabeledSet(["Perfect fit, I love it.", "It broke, awful quality."], [5, 1])
    result, model = train_and_test(train, test, "embedding", C=10.0)
    assert result["status"] == "ok" and model is not None
    assert result["accuracy"] == 1.0


def test_degenerate_training_sets_are_reported_not_crashed():
    test = _reviews(100, 1)
    single = LabeledSet(["great case"] * 10, [5] * 10)
    result, model = train_and_test(single, test, "tfidf")
    assert model is None and result["status"] == "single_class" and "constant" in result["note"]
    assert result["accuracy"] == pytest.approx(np.mean(np.array(test.labels) == 5))
    empty, model = train_and_test(LabeledSet([], []), test, "tfidf")
    assert empty["status"] == "empty" and empty["accuracy"] is None and model is None
    out = train_on_x_test_on_real({"real": _reviews(100, 0), "dp": single}, test, classes=[1, 5], families=("tfidf",))
    assert out["results"]["tfidf"]["dp"]["status"] == "single_class"
    assert out["feature_importance"]["dp"]["spearman"] is None
    skipped = train_on_x_test_on_real({"real": single}, LabeledSet(["a", "b"], [5, 5]), classes=[1, 5])
    assert skipped["status"] == "skipped"


def test_dp_baseline_records_privacy_and_is_in_the_table():
    train, test = _reviews(300, 0), _reviews(200, 1)
    out = train_on_x_test_on_real(
        {"real": train},
        test,
        classes=[1, 2, 3, 4, 5],
        families=("tfidf",),
        dp_epsilon=2.0,
        rng=np.random.default_rng(0),
    )
    privacy = out["results"]["tfidf"]["real_dp"]["privacy"]
    assert privacy["epsilon"] == 2.0 and privacy["delta"] == 0.0 and privacy["n"] == 300
    assert privacy["dimension"] == 5 * (2**10 + 1)


def test_dp_logistic_regression_sensitivity_and_noise_scale():
    data = _embedded(400, 0)
    model = fit_dp_logistic_regression(
        data.embeddings,
        data.labels,
        [1, 5],
        epsilon=3.0,
        lam=0.05,
        unit_contribution=2,
        rng=np.random.default_rng(0),
    )
    p = model.privacy
    tau = 0.01 * LIPSCHITZ * 2 / 400
    assert p["solver_tolerance"] == pytest.approx(tau)
    assert p["l2_sensitivity"] == pytest.approx((2 * math.sqrt(2) * 2 / 400 + 2 * tau) / 0.05)
    assert p["noise_scale"] == pytest.approx(p["l2_sensitivity"] / 3.0)
    assert p["dimension"] == 2 * 17 and p["private"] is True
    # the noise: norm ~ Gamma(dim, scale) (mean dim * scale), direction uniform
    rng = np.random.default_rng(1)
    draws = np.array([sample_noise(34, 0.5, rng) for _ in range(4000)])
    assert np.linalg.norm(draws, axis=1).mean() == pytest.approx(34 * 0.5, rel=0.02)
    assert np.abs(draws.mean(axis=0)).max() < 0.2


def test_dp_logistic_regression_minimiser_matches_sklearn():
    data = _embedded(300, 3)
    lam = 0.01
    model = fit_dp_logistic_regression(data.embeddings, data.labels, [1, 5], epsilon=None, lam=lam)
    assert model.privacy["private"] is False
    x = prepare_features(data.embeddings)
    # Two classes: at the optimum w1 = -w5 by symmetry, so v = w5 - w1 minimises the binary logistic loss with
    # penalty (lam / 4) ||v||^2, i.e. sklearn's binary model with C = 2 / (n lam).
    ref = LogisticRegression(C=2 / (len(x) * lam), fit_intercept=False, tol=1e-10, max_iter=10_000)
    ref.fit(x, data.labels)
    np.testing.assert_allclose(model.weights[1] - model.weights[0], ref.coef_[0], atol=1e-4)


def test_dp_accuracy_approaches_non_private_at_large_epsilon():
    train, test = _embedded(400, 0), _embedded(300, 1)
    classes = [1, 5]
    exact = fit_dp_logistic_regression(train.embeddings, train.labels, classes, None)
    acc = {}
    for eps in (0.01, 1e5):
        accs = []
        for seed in range(5):
            m = fit_dp_logistic_regression(
                train.embeddings, train.labels, classes, eps, rng=np.random.default_rng(seed)
            )
            accs.append(classification_scores(test.labels, m.predict(test.embeddings))["accuracy"])
        acc[eps] = float(np.mean(accs))
    base = classification_scores(test.labels, exact.predict(test.embeddings))["accuracy"]
    assert base > 0.9
    assert acc[1e5] == pytest.approx(base, abs=0.02)
    assert acc[0.01] < 0.75  # tiny epsilon: the noise swamps the weights


def test_dp_logistic_regression_refuses_bad_input():
    x = np.eye(3)
    with pytest.raises(ValueError, match="outside the public class domain"):
        fit_dp_logistic_regression(x, [1, 2, 7], [1, 2, 3], 1.0)
    with pytest.raises(ValueError, match="at least two distinct"):
        fit_dp_logistic_regression(x, [1, 1, 1], [1], 1.0)
    # a class of the public domain absent from the data still gets a weight row
    model = fit_dp_logistic_regression(x, [1, 2, 1], [1, 2, 3], 1.0, rng=np.random.default_rng(0))
    assert model.weights.shape == (3, 4)
