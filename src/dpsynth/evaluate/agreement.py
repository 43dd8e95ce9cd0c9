"""Code agreement: does a generated record read like the control code it was generated from?

A classifier trained on the REAL training split (sentence embeddings + logistic regression, the TSTR embedding
family) labels every synthetic record; the agreement is the share whose predicted label equals the code in its
prompt. It is an evaluation on the private data, not a DP quantity, and is reported as such. A generator that
ignores its codes scores about the majority share of the real classifier's predictions; a generator that follows
them scores about the real classifier's own accuracy on real test data (``reference``, returned alongside), which
is the ceiling this measurement can show.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> centers = {"pos": np.array([1.0, 0.0]), "neg": np.array([0.0, 1.0])}
>>> def sample(labels):
...     return np.stack([centers[y] + 0.1 * rng.standard_normal(2) for y in labels])
>>> real_y = ["pos", "neg"] * 20
>>> follows = code_agreement(sample(real_y), real_y, sample(["pos"] * 10), ["pos"] * 10)
>>> ignores = code_agreement(sample(real_y), real_y, sample(["neg"] * 10), ["pos"] * 10)
>>> follows["agreement"], ignores["agreement"]
(1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression


def code_reader(real_features: np.ndarray, real_labels: Sequence[Hashable], *, C: float = 1.0) -> LogisticRegression:
    """The classifier that reads synthetic records against their codes, fitted on the real training split: one
    definition for :func:`code_agreement` and ``bench/code_confusion.py`` (its per-code confusion)."""
    return LogisticRegression(C=C, max_iter=2000).fit(np.asarray(real_features), list(real_labels))


def code_agreement(
    real_features: np.ndarray,
    real_labels: Sequence[Hashable],
    synthetic_features: np.ndarray,
    synthetic_codes: Sequence[Hashable],
    *,
    test_features: np.ndarray | None = None,
    test_labels: Sequence[Hashable] | None = None,
    C: float = 1.0,
) -> dict[str, Any]:
    """Share of synthetic records whose real-trained prediction equals their code; with a real test set, also the
    classifier's accuracy there (``reference``). ``agreement`` is None when it cannot be measured."""
    out: dict[str, Any] = {"agreement": None, "reference": None, "n": len(synthetic_codes)}
    if len(set(real_labels)) < 2 or len(synthetic_codes) == 0:
        out["note"] = "fewer than two real classes or no synthetic record"
        return out
    clf = code_reader(real_features, real_labels, C=C)
    pred = clf.predict(np.asarray(synthetic_features))
    out["agreement"] = float(np.mean([p == c for p, c in zip(pred, synthetic_codes, strict=True)]))
    if test_features is not None and test_labels is not None and len(test_labels):
        out["reference"] = float(np.mean(clf.predict(np.asarray(test_features)) == np.asarray(test_labels)))
    return out
