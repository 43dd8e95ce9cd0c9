"""Utility: train on X, test on real (TSTR). Is the synthetic data useful for training a downstream classifier?

For one label (rating, or category when the real test split has more than one), classifiers are trained on each
training set the caller gives (typically ``real`` = the real training split, ``dp`` and ``no_dp`` = the two synthetic
arms) and on the real training split under DP at a given epsilon (``real_dp``, :mod:`dpsynth.evaluate.dp_logreg`);
every one is tested on the same real test split. Two feature families:

* ``tfidf``: TF-IDF of word 1- and 2-grams (vectorizer fitted on that training set) + logistic regression;
  for ``real_dp`` the vocabulary and IDF weights would leak the private data, so it uses a data-independent hashed
  term-frequency map (:data:`DP_HASH_FEATURES` buckets) instead.
* ``embedding``: all-MiniLM-L6-v2 sentence embeddings + logistic regression (the embedding model is public, so the same
  features serve ``real_dp``).

Metrics: **accuracy** and **macro-F1** (the unweighted mean of per-class F1 over the classes present in the real test
split; a class never predicted has F1 0). Higher is better; ``majority_accuracy`` (always predicting the real
training split's most frequent class) is the chance reference.

Degenerate training sets are not errors: a set with a single class gives ``status="single_class"`` and is scored as
the constant classifier that predicts that class (what any learner fitted to it would do); an empty set gives
``status="empty"`` with null metrics. Both say so in ``note``.

**Feature-importance consistency** (TF-IDF family): a term's importance is the L2 norm of its coefficients over the
classes. The real-trained and synthetic-trained models' top-``k`` terms are pooled (a term missing from a model's
vocabulary has importance 0 there) and the Spearman rank correlation of the two importance vectors is reported
(1: the synthetic model relies on the same words in the same order). The term lists themselves are not returned:
the real model's top terms are a statistic of private data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline, make_pipeline

from dpsynth.evaluate.describe import MetricInfo
from dpsynth.evaluate.dp_logreg import fit_dp_logistic_regression

Family = Literal["tfidf", "embedding"]
DP_HASH_FEATURES = 2**10
DP_NAME = "real_dp"

DESCRIPTIONS: dict[str, MetricInfo] = {
    "code_agreement": MetricInfo(
        "share of synthetic records that a classifier trained on the real training sample (embeddings + logistic "
        "regression) labels as the control code they were generated from; near the reference (that classifier's "
        "accuracy on real test records) the codes are followed, near the majority share they are ignored",
        "higher",
    ),
    "tstr_accuracy": MetricInfo("accuracy on the real test split of a classifier trained on the named set", "higher"),
    "tstr_macro_f1": MetricInfo(
        "macro-F1 on the real test split (mean per-class F1 over the classes in the test split)", "higher"
    ),
    "feature_importance_spearman": MetricInfo(
        "Spearman correlation of term importances (L2 norm of the coefficients) of the real- and synthetic-trained "
        "TF-IDF models over their pooled top-k terms, in [-1, 1]: 1 = same terms in the same order, 0 = unrelated. "
        "Negative: the two models rely on different words (each one's top terms weigh little in the other, which the "
        "pooling turns into a negative rank correlation); see top_k_overlap, the share of top terms they share",
        "higher",
    ),
}


@dataclass
class LabeledSet:
    """Texts with one label each; ``embeddings`` (unit-norm rows) may be given to avoid recomputing them."""

    texts: Sequence[str]
    labels: Sequence[Hashable]
    embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError("texts and labels must have the same length")
        if self.embeddings is not None and len(self.embeddings) != len(self.texts):
            raise ValueError("embeddings must have one row per text")

    def features(self) -> np.ndarray:
        if self.embeddings is None:
            from dpsynth.evaluate.embeddings import embed

            self.embeddings = embed(self.texts)
        return self.embeddings


def classification_scores(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> dict[str, float]:
    """Accuracy and macro-F1 over the classes present in ``y_true``.

    >>> classification_scores([1, 1, 2, 2], [1, 1, 1, 2])
    {'accuracy': 0.75, 'macro_f1': 0.7333333333333334}
    """
    labels = sorted(set(y_true), key=repr)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }


def _fit(train: LabeledSet, family: Family, C: float) -> Pipeline | LogisticRegression:
    if family == "tfidf":
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)
        return make_pipeline(vec, LogisticRegression(C=C, max_iter=2000)).fit(list(train.texts), list(train.labels))
    return LogisticRegression(C=C, max_iter=2000).fit(train.features(), list(train.labels))


def _inputs(data: LabeledSet, family: Family) -> Any:
    return list(data.texts) if family == "tfidf" else data.features()


def train_and_test(
    train: LabeledSet, test: LabeledSet, family: Family, *, C: float = 1.0
) -> tuple[dict[str, Any], Any]:
    """Fit one classifier of ``family`` on ``train`` and score it on ``test``; returns ``(result, model or None)``.

    ``result``: ``{"status", "note", "n_train", "train_classes", "accuracy", "macro_f1"}``.
    """
    result: dict[str, Any] = {"status": "ok", "note": "", "n_train": len(train.texts)}
    classes = set(train.labels)
    result["train_classes"] = len(classes)
    if not classes:
        result.update(status="empty", note="no training records: no classifier", accuracy=None, macro_f1=None)
        return result, None
    if len(classes) == 1:
        (only,) = classes
        result.update(status="single_class", note="one class in the training set: scored as the constant classifier")
        result.update(classification_scores(list(test.labels), [only] * len(test.labels)))
        return result, None
    model = _fit(train, family, C)
    result.update(classification_scores(list(test.labels), list(model.predict(_inputs(test, family)))))
    return result, model


def dp_train_and_test(
    train: LabeledSet,
    test: LabeledSet,
    family: Family,
    classes: Sequence[Hashable],
    epsilon: float,
    *,
    lam: float = 1e-2,
    unit_contribution: int = 1,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """The ``real_dp`` baseline: DP logistic regression on data-independent features, scored on ``test``.

    The result carries the mechanism's privacy record (``privacy``: epsilon, delta, sensitivity, ...).
    """

    def feats(data: LabeledSet) -> np.ndarray:
        if family == "embedding":
            return data.features()
        hv = HashingVectorizer(n_features=DP_HASH_FEATURES, alternate_sign=False, norm=None)
        return np.asarray(hv.transform(list(data.texts)).toarray())

    model = fit_dp_logistic_regression(
        feats(train), list(train.labels), classes, epsilon, lam=lam, unit_contribution=unit_contribution, rng=rng
    )
    result: dict[str, Any] = {"status": "ok", "note": "", "n_train": len(train.texts)}
    result["train_classes"] = len(set(train.labels))
    result.update(classification_scores(list(test.labels), model.predict(feats(test))))
    result["privacy"] = model.privacy
    return result


def _importances(model: Pipeline) -> dict[str, float]:
    vec, clf = model.steps[0][1], model.steps[-1][1]
    norms = np.linalg.norm(np.atleast_2d(clf.coef_), axis=0)
    return dict(zip(vec.get_feature_names_out(), norms.tolist(), strict=True))


def feature_importance_consistency(
    real_model: Pipeline, synthetic_model: Pipeline, *, top_k: int = 50
) -> dict[str, Any]:
    """Spearman correlation of term importances over the pooled top-``top_k`` terms of two TF-IDF models.

    Returns ``{"spearman", "n_terms", "top_k_overlap"}``; ``top_k_overlap`` is the share of the real model's top-k
    terms that are also in the synthetic model's top-k. ``spearman`` is None when undefined (a constant vector).
    """
    real_imp, synth_imp = _importances(real_model), _importances(synthetic_model)

    def top(imp: dict[str, float]) -> list[str]:
        return [t for t, _ in sorted(imp.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]

    top_real, top_synth = top(real_imp), top(synth_imp)
    pooled = sorted(set(top_real) | set(top_synth))
    a = np.array([real_imp.get(t, 0.0) for t in pooled])
    b = np.array([synth_imp.get(t, 0.0) for t in pooled])
    rho = None
    if len(pooled) >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
        rho = float(spearmanr(a, b).statistic)
    overlap = len(set(top_real) & set(top_synth)) / max(len(top_real), 1)
    return {"spearman": rho, "n_terms": len(pooled), "top_k_overlap": overlap}


def train_on_x_test_on_real(
    train_sets: Mapping[str, LabeledSet],
    test: LabeledSet,
    *,
    classes: Sequence[Hashable],
    families: Sequence[Family] = ("tfidf", "embedding"),
    real_name: str = "real",
    dp_epsilon: float | None = None,
    dp_lam: float = 1e-2,
    unit_contribution: int = 1,
    top_k: int = 50,
    C: float = 1.0,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """The whole TSTR table for one label.

    ``train_sets``: name -> training set (``real_name`` should be the real training split). ``classes``: the label's
    public domain (used by the DP baseline). With ``dp_epsilon``, a ``real_dp`` entry is added per family. Returns
    ``{"status", "majority_accuracy", "results": {family: {name: result}}, "feature_importance": {name: ...}}``; when
    the real test split has fewer than two classes the task is meaningless and ``status="skipped"`` with a ``note``.
    """
    if len(set(test.labels)) < 2:
        return {"status": "skipped", "note": "the real test split has fewer than two classes for this label"}
    out: dict[str, Any] = {"status": "ok", "results": {}, "feature_importance": {}}
    real = train_sets.get(real_name)
    if real is not None and len(real.labels):
        majority = Counter(real.labels).most_common(1)[0][0]
        out["majority_accuracy"] = float(np.mean([y == majority for y in test.labels]))
    for family in families:
        table: dict[str, Any] = {}
        models: dict[str, Any] = {}
        for name, data in train_sets.items():
            table[name], models[name] = train_and_test(data, test, family, C=C)
        if dp_epsilon is not None and real is not None:
            table[DP_NAME] = dp_train_and_test(
                real, test, family, classes, dp_epsilon, lam=dp_lam, unit_contribution=unit_contribution, rng=rng
            )
        out["results"][family] = table
        if family == "tfidf" and models.get(real_name) is not None:
            for name, model in models.items():
                if name == real_name:
                    continue
                out["feature_importance"][name] = (
                    feature_importance_consistency(models[real_name], model, top_k=top_k)
                    if model is not None
                    else {"spearman": None, "note": table[name]["note"]}
                )
    return out
