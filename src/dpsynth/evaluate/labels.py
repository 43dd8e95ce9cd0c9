"""Labels that utility is measured on: every control code, plus a binary sentiment derived from a star rating.

Rating classifiers on 5 classes are hard at small n (on 480 Amazon reviews every rating classifier, the real-data one
included, predicted the majority class), so the frontier also reports the binary sentiment that the DP
synthetic-text literature uses: 1-2 stars negative, 4-5 positive, 3 stars dropped (neither).

>>> derive_labels({"rating": 2, "category": "Bars"}, ["rating", "category", "sentiment"])
{'rating': 2, 'category': 'Bars', 'sentiment': 'negative'}
>>> derive_labels({"rating": 3}, ["rating", "sentiment"])
{'rating': 3}
>>> label_domains({"rating": (1, 2, 3, 4, 5), "category": ("a", "b")}, ["rating", "sentiment"])
{'rating': (1, 2, 3, 4, 5), 'sentiment': ('negative', 'positive')}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SENTIMENT = "sentiment"
SENTIMENT_SOURCE = "rating"
SENTIMENT_VALUES = ("negative", "positive")


def sentiment_of(rating: Any) -> str | None:
    """``negative`` for 1-2 stars, ``positive`` for 4-5, None for 3 or a non-numeric value."""
    try:
        stars = float(rating)
    except (TypeError, ValueError):
        return None
    if stars <= 2:
        return "negative"
    if stars >= 4:
        return "positive"
    return None


def default_labels(code_names: Sequence[str]) -> list[str]:
    """Every code, and ``sentiment`` when there is a rating code."""
    out = list(code_names)
    if SENTIMENT_SOURCE in code_names:
        out.append(SENTIMENT)
    return out


def derive_labels(codes: Mapping[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    """The value of each wanted label for one record (labels it has no value for are left out)."""
    out: dict[str, Any] = {}
    for label in labels:
        value = sentiment_of(codes.get(SENTIMENT_SOURCE)) if label == SENTIMENT else codes.get(label)
        if value is not None:
            out[label] = value
    return out


def label_domains(code_domains: Mapping[str, Sequence[Any]], labels: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """The public domain of each label."""
    out: dict[str, tuple[Any, ...]] = {}
    for label in labels:
        if label == SENTIMENT:
            if SENTIMENT_SOURCE in code_domains:
                out[label] = SENTIMENT_VALUES
        elif label in code_domains:
            out[label] = tuple(code_domains[label])
    return out
