"""Privacy of the released text itself: canary leakage, distance to the closest record, verbatim n-gram overlap.

These are empirical checks on what is released (the synthetic records), complementing the DP guarantee:

* **Canary leakage** (as in Table 3 of the seed paper): canaries are fake records planted in the training split, each
  with a name, a street, a phone number and a 6-digit secret. For each arm, the number of synthetic records that
  contain each field of any canary. Matching rules: name and street match as whole words, case-insensitively, with any
  run of whitespace between their words; a phone matches when the digits of a phone-like span of the text (digits
  joined by spaces, dots, dashes, slashes or brackets) contain the canary's digits, so "(555) 123-4567" matches
  "555.123.4567"; a secret matches as a standalone 6-digit number (not inside a longer digit run).
* **Canary-shaped personal data**: the records of each arm (and, as a base rate, of the real test split) that carry a
  field in the canary template's shape with any value (:data:`dpsynth.data.canaries.SHAPES`: "I am <First> <Last>,",
  a street "<3-5 digits> <Name> <street suffix>", a phone "###-###-####", "My secret code is ######"). A model that
  memorised the canaries' structure writes such fields with invented values, which the exact count above misses.
* **Distance to closest record** (DCR, embedding space): cosine distance ``1 - cos`` from each synthetic record to its
  nearest training record, compared with the same distance from each real *test* record (never trained on) to the
  training split. Synthetic records systematically closer to the training data than fresh real records are suggest
  memorisation; farther (a median ratio above 1) is no privacy risk, only text less like the real data (fidelity).
* **Verbatim n-gram overlap**: the share of synthetic records that share at least one word ``n``-gram (default 8
  lower-cased words) with some training record, minus the same share for real test records (which shows how much
  overlap arises without memorisation: boilerplate, quotes of product names). Records shorter than ``n`` words
  cannot overlap. The excess is negative when real test records overlap the training split more than synthetic ones
  do (duplicated reviews across users, short or generic synthetic text): no sign of memorisation, but not "better
  than private" either, so 0 or below reads as "nothing beyond the base rate".

Only counts, rates and distances leave this module; canary fields are ours (fake), never real records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dpsynth.data.canaries import SHAPES
from dpsynth.evaluate.describe import MetricInfo
from dpsynth.evaluate.fidelity import max_cosine_similarity, words

CANARY_COLUMNS = ("Name", "Street", "Phone", "Canary")
_FIELD = {"Name": "name", "Street": "street", "Phone": "phone", "Canary": "secret"}
_PHONE_SPAN_RE = re.compile(r"[+(]?\d[\d\s().\-/]*\d")

DESCRIPTIONS: dict[str, MetricInfo] = {
    "canary_leakage": MetricInfo(
        "number of synthetic records containing a canary's name, street, phone number or secret", "lower"
    ),
    "canary_shape": MetricInfo(
        "number of records containing a field in the shape of the canary template (I am <First> <Last>, a street "
        "<digits> <Name> <suffix>, a phone ###-###-####, My secret code is ######) with any value: memorised "
        "structure even when the values are invented",
        "lower",
    ),
    "dcr_median_ratio": MetricInfo(
        "median synthetic-to-train cosine distance / median test-to-train cosine distance: below 1, synthetic records "
        "sit closer to the training data than unseen real records do (a sign of memorisation); 1 or above, no closer "
        "(above 1 is no privacy risk, only text less like the real data). Higher is better up to 1",
        "higher",
    ),
    "dcr_share_below_test_p05": MetricInfo(
        "share of synthetic records closer to the training data than the 5th percentile of test records (0.05 when "
        "synthetic records behave like unseen real ones)",
        "lower",
    ),
    "verbatim_excess": MetricInfo(
        "share of synthetic records sharing a word n-gram with a training record minus that share for real test "
        "records (the base rate). Above 0: more overlap than unseen real text has, a sign of copying; 0 or below: "
        "none beyond the base rate. Negative when real test records overlap the training data more than synthetic "
        "ones (duplicated reviews, generic phrases), e.g. -0.85 = 85 points less than real text: not a privacy gain",
        "lower",
    ),
}


def digits(text: str) -> str:
    """The digits of ``text``, in order.

    >>> digits("(555) 123-4567")
    '5551234567'
    """
    return "".join(c for c in text if c.isdigit())


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(parts) + r"(?!\w)", re.IGNORECASE)


def contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive match of ``phrase`` (any whitespace between its words).

    >>> contains_phrase("I met JANE  Doe there", "Jane Doe"), contains_phrase("Janet Doe", "Jane Doe")
    (True, False)
    """
    return bool(phrase.strip()) and _phrase_pattern(phrase).search(text) is not None


def contains_phone(text: str, phone: str) -> bool:
    """Digit-normalised phone match within phone-like spans.

    >>> contains_phone("call 555.123.4567 now", "(555) 123-4567"), contains_phone("5551 and 234567", "555-123-4567")
    (True, False)
    """
    target = digits(phone)
    return bool(target) and any(target in digits(m.group()) for m in _PHONE_SPAN_RE.finditer(text))


def contains_secret(text: str, secret: str) -> bool:
    """The secret as a standalone number.

    >>> contains_secret("code 123456.", "123456"), contains_secret("id 91234567", "123456")
    (True, False)
    """
    return bool(secret) and re.search(rf"(?<!\d){re.escape(secret)}(?!\d)", text) is not None


def _matches(text: str, column: str, value: str) -> bool:
    if column == "Phone":
        return contains_phone(text, value)
    if column == "Canary":
        return contains_secret(text, value)
    return contains_phrase(text, value)


def canary_leakage(
    synthetic_by_arm: Mapping[str, Sequence[str]], canaries: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Canary leakage table: rows are arms, columns ``Name, Street, Phone, Canary``.

    Returns ``{"records": {arm: {column: count}}, "canaries": {arm: {column: count}}, "n_synthetic": {arm: n},
    "n_canaries": k}``: ``records`` counts synthetic records that contain that field of any canary; ``canaries``
    counts distinct canaries whose field appears in some synthetic record of the arm.
    """
    records: dict[str, dict[str, int]] = {}
    leaked: dict[str, dict[str, int]] = {}
    for arm, texts in synthetic_by_arm.items():
        rec_counts = dict.fromkeys(CANARY_COLUMNS, 0)
        canary_hits: dict[str, set[int]] = {c: set() for c in CANARY_COLUMNS}
        for text in texts:
            for column in CANARY_COLUMNS:
                hits = [i for i, c in enumerate(canaries) if _matches(text, column, str(c[_FIELD[column]]))]
                if hits:
                    rec_counts[column] += 1
                    canary_hits[column].update(hits)
        records[arm] = rec_counts
        leaked[arm] = {c: len(canary_hits[c]) for c in CANARY_COLUMNS}
    return {
        "records": records,
        "canaries": leaked,
        "n_synthetic": {arm: len(t) for arm, t in synthetic_by_arm.items()},
        "n_canaries": len(canaries),
    }


def canary_shapes(texts: Sequence[str]) -> dict[str, int]:
    """For each canary column, the number of ``texts`` containing a field in its template shape (any value).

    >>> canary_shapes(["I am Ann Lee, 12 Oak St, 555-010-0000.", "Call 555-123-4567 now", "My secret code is 1234."])
    {'Name': 1, 'Street': 0, 'Phone': 2, 'Canary': 0}
    """
    return {column: sum(SHAPES[column].search(t) is not None for t in texts) for column in CANARY_COLUMNS}


def distance_to_closest_record(
    train_embeddings: np.ndarray, synthetic_embeddings: np.ndarray, test_embeddings: np.ndarray
) -> dict[str, Any]:
    """DCR of synthetic and test records to the training split (unit-norm embeddings; distance ``1 - cos``).

    Returns ``{"synthetic", "test"}`` (arrays, for histograms) and ``synthetic_median``, ``test_median``,
    ``median_ratio`` (synthetic / test; None if the test median is 0), ``share_below_test_p05`` and
    ``near_copies`` (synthetic records at distance below 1e-4, i.e. the same text up to embedding noise).
    """
    syn = 1.0 - max_cosine_similarity(np.asarray(synthetic_embeddings), np.asarray(train_embeddings))
    tst = 1.0 - max_cosine_similarity(np.asarray(test_embeddings), np.asarray(train_embeddings))
    syn, tst = np.clip(syn, 0.0, 2.0), np.clip(tst, 0.0, 2.0)
    if len(syn) == 0 or len(tst) == 0:
        raise ValueError("need at least one synthetic and one test record")
    syn_med, tst_med = float(np.median(syn)), float(np.median(tst))
    p05 = float(np.quantile(tst, 0.05))
    return {
        "synthetic": syn,
        "test": tst,
        "synthetic_median": syn_med,
        "test_median": tst_med,
        "median_ratio": syn_med / tst_med if tst_med > 0 else None,
        "test_p05": p05,
        "share_below_test_p05": float(np.mean(syn < p05)),
        "near_copies": int(np.sum(syn < 1e-4)),
    }


def word_ngrams(text: str, n: int) -> set[str]:
    """The set of word ``n``-grams of ``text`` (lower-cased words joined by one space).

    >>> sorted(word_ngrams("A b, C d", 3))
    ['a b c', 'b c d']
    """
    toks = words(text)
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def ngram_index(texts: Iterable[str], n: int) -> set[str]:
    """Every word ``n``-gram of ``texts`` (an in-memory set: fine for the tens of thousands of records evaluated)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    index: set[str] = set()
    for text in texts:
        index |= word_ngrams(text, n)
    return index


def shares_ngram(index: set[str], queries: Sequence[str], n: int) -> np.ndarray:
    """For each query, whether it shares a word ``n``-gram with ``index`` (from :func:`ngram_index`); bool array."""
    return np.array([not index.isdisjoint(word_ngrams(q, n)) for q in queries], dtype=bool)


def verbatim_overlap(
    train_texts: Sequence[str], synthetic_texts: Sequence[str], test_texts: Sequence[str], *, n: int = 8
) -> dict[str, Any]:
    """Rate of synthetic records sharing an ``n``-gram with the training split, against the test split's rate.

    Returns ``{"n", "synthetic_rate", "test_rate", "excess", "synthetic_flags", "test_flags"}``; ``excess`` =
    synthetic rate - test rate (0 or below: no more verbatim overlap than unseen real text has).
    """
    index = ngram_index(train_texts, n)
    syn, tst = shares_ngram(index, synthetic_texts, n), shares_ngram(index, test_texts, n)
    syn_rate = float(syn.mean()) if len(syn) else None
    tst_rate = float(tst.mean()) if len(tst) else None
    excess = syn_rate - tst_rate if syn_rate is not None and tst_rate is not None else None
    return {
        "n": n,
        "synthetic_rate": syn_rate,
        "test_rate": tst_rate,
        "excess": excess,
        "synthetic_flags": syn,
        "test_flags": tst,
    }
