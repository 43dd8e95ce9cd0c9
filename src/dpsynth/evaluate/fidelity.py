"""Fidelity: how close the synthetic records' distribution is to the real records', metric by metric.

Every function takes plain sequences (texts, code values, numbers, embedding arrays) and returns plain floats and
arrays, so each can be checked on constructed inputs with a known answer. Conventions:

* **KL divergence** is ``KL(real || synthetic)`` in nats (``scipy.stats.entropy``), computed on histograms over a
  shared support with additive smoothing: every bin gets ``alpha`` pseudo-counts on both sides, so a bin that the
  synthetic side never hits gives a large but finite penalty instead of infinity. It is 0 for identical histograms.
* **Wasserstein-1** (``scipy.stats.wasserstein_distance``) is in the unit of the quantity (tokens, stars); for a code
  without an order (category) it is taken under the discrete metric, where it equals the total variation distance.

Statistics computed from real records here (the top-k vocabulary, the real-to-real reference similarities, the
sentiment model) are *internal evaluation statistics*: they are compared with the synthetic side and only aggregates
(a divergence, a histogram of similarities) leave this module; no real word list or record is released.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import entropy, rankdata, wasserstein_distance

from dpsynth.evaluate.describe import MetricInfo

DESCRIPTIONS: dict[str, MetricInfo] = {
    "length_kl": MetricInfo(
        "KL(real || synthetic) of the length in tokens, on shared bins, add-alpha smoothed", "lower"
    ),
    "length_wasserstein": MetricInfo("Wasserstein-1 distance between real and synthetic lengths, in tokens", "lower"),
    "code_kl": MetricInfo(
        "KL(real || synthetic) of a control code over its public domain, add-alpha smoothed", "lower"
    ),
    "code_wasserstein": MetricInfo(
        "Wasserstein-1 between real and synthetic code distributions (numeric codes: in code units; others: under the "
        "discrete metric, i.e. total variation distance)",
        "lower",
    ),
    "unigram_kl": MetricInfo(
        "KL(real || synthetic) of word frequencies over the real side's top-k words plus one bucket for all others",
        "lower",
    ),
    "unigram_wasserstein": MetricInfo(
        "Wasserstein-1 between the two word distributions placed on the real frequency-rank axis, scaled to [0, 1]",
        "lower",
    ),
    "nn_similarity": MetricInfo(
        "for each synthetic record, its highest cosine similarity to a real record (a reference pool of half the real "
        "records); compared with the same for held-out real records. Too high: copying; too low: off-distribution",
        "closer to reference",
    ),
    "mauve": MetricInfo(
        "MAUVE (Pillutla et al. 2021) between real and synthetic sentence embeddings, in [0, 1]: the mean over "
        "evaluate.mauve_repeats draws of equal-size samples and k-means seeds, their standard deviation as sd",
        "higher",
    ),
    "mauve_bounded": MetricInfo(
        "MAUVE with every text on both sides cut to the generators' token budget (generate.max_new_tokens, or the "
        "released bound with data.max_tokens=auto) by the rule that cuts training responses: content at one length, "
        "where plain MAUVE also reads how much longer real "
        "texts can be than the budget allows",
        "higher",
    ),
    "correlation_frobenius": MetricInfo(
        "Frobenius norm of the difference of the real and synthetic Spearman correlation matrices over "
        "(rating, length, sentiment)",
        "lower",
    ),
    "correlation_max_abs": MetricInfo("largest absolute entry of that difference", "lower"),
}

WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits, with an inner apostrophe).

    >>> words("It's GREAT, 10/10!")
    ["it's", 'great', '10', '10']
    """
    return WORD_RE.findall(text.lower())


def smoothed_kl(
    p_counts: Sequence[float] | np.ndarray, q_counts: Sequence[float] | np.ndarray, alpha: float = 1.0
) -> float:
    """``KL(p || q)`` in nats between two count vectors over the same bins, each bin given ``alpha`` pseudo-counts.

    >>> smoothed_kl([3, 1], [3, 1])
    0.0
    >>> round(smoothed_kl([1, 0], [0, 1], alpha=1.0), 4)  # (2/3, 1/3) vs (1/3, 2/3): ln(2) / 3
    0.231
    """
    p = np.asarray(p_counts, dtype=float) + alpha
    q = np.asarray(q_counts, dtype=float) + alpha
    if p.shape != q.shape or p.ndim != 1 or p.size == 0:
        raise ValueError("count vectors must be one-dimensional, non-empty and of equal length")
    if alpha < 0 or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("counts must be non-negative with a positive total (or alpha > 0)")
    return float(entropy(p, q))


def numeric_divergence(
    real: Sequence[float] | np.ndarray,
    synthetic: Sequence[float] | np.ndarray,
    *,
    bins: int | Sequence[float] = 20,
    alpha: float = 1.0,
) -> dict[str, float]:
    """KL on a shared histogram and Wasserstein-1 on the raw values of a numeric quantity.

    ``bins``: a number of equal-width bins over the range of both samples together, or explicit edges.
    Returns ``{"kl", "wasserstein", "real_mean", "synthetic_mean"}``.

    >>> numeric_divergence([1, 2, 3], [6, 7, 8])["wasserstein"]
    5.0
    """
    r = np.asarray(real, dtype=float)
    s = np.asarray(synthetic, dtype=float)
    if r.size == 0 or s.size == 0:
        raise ValueError("both samples must be non-empty")
    edges = np.histogram_bin_edges(np.concatenate([r, s]), bins=bins)
    r_counts, _ = np.histogram(r, bins=edges)
    s_counts, _ = np.histogram(s, bins=edges)
    return {
        "kl": smoothed_kl(r_counts, s_counts, alpha),
        "wasserstein": float(wasserstein_distance(r, s)),
        "real_mean": float(r.mean()),
        "synthetic_mean": float(s.mean()),
    }


def token_lengths(texts: Sequence[str], tokenizer: Any) -> np.ndarray:
    """Length of each text in tokens of ``tokenizer`` (no special tokens added)."""
    if not texts:
        return np.zeros(0, dtype=int)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.array([len(x) for x in ids], dtype=int)


def length_fidelity(
    real_texts: Sequence[str], synthetic_texts: Sequence[str], tokenizer: Any, *, bins: int = 20, alpha: float = 1.0
) -> dict[str, float]:
    """:func:`numeric_divergence` of the lengths in tokens (``length_kl``, ``length_wasserstein``)."""
    return numeric_divergence(
        token_lengths(real_texts, tokenizer), token_lengths(synthetic_texts, tokenizer), bins=bins, alpha=alpha
    )


def code_fidelity(
    real_values: Sequence[Hashable],
    synthetic_values: Sequence[Hashable],
    domain: Sequence[Hashable],
    *,
    alpha: float = 1.0,
    positions: Mapping[Hashable, float] | None = None,
    ordinal: bool | None = None,
) -> dict[str, Any]:
    """Divergence between two samples of one control code over its public ``domain``.

    Counts are taken over the domain (values outside it are an error: generated codes come from the domain). Returns
    ``{"kl", "wasserstein", "tvd", "ground_metric", "real_freq", "synthetic_freq"}``; the frequencies are lists in
    domain order. Wasserstein uses positions on the code's scale for an ordinal code (``positions``, else the values
    themselves when all are numbers, else 1, 2, ... in domain order) and the discrete metric for a nominal one (then
    it equals ``tvd``). ``ordinal`` None: ordinal exactly when every value is a number (a star rating).

    >>> out = code_fidelity([1, 1, 2], [2, 2, 3], domain=[1, 2, 3], alpha=0)
    >>> round(out["wasserstein"], 4), round(out["tvd"], 4)
    (1.0, 0.6667)
    """
    dom = list(domain)
    if not dom or len(set(dom)) != len(dom):
        raise ValueError("the domain must be non-empty with distinct values")
    index = {v: i for i, v in enumerate(dom)}
    counts = []
    for sample in (real_values, synthetic_values):
        c = np.zeros(len(dom))
        for v in sample:
            if v not in index:
                raise ValueError(f"code value {v!r} is outside the domain")
            c[index[v]] += 1
        if c.sum() == 0:
            raise ValueError("both samples must be non-empty")
        counts.append(c)
    p, q = counts[0] / counts[0].sum(), counts[1] / counts[1].sum()
    tvd = 0.5 * float(np.abs(p - q).sum())
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in dom)
    if ordinal is None:
        ordinal = numeric or positions is not None
    if ordinal:
        if positions is not None:
            pos = np.array([positions[v] for v in dom], dtype=float)
        else:
            pos = np.array(dom if numeric else range(1, len(dom) + 1), dtype=float)
        wd = float(wasserstein_distance(pos, pos, u_weights=p, v_weights=q))
    else:
        wd = tvd
    return {
        "kl": smoothed_kl(counts[0], counts[1], alpha),
        "wasserstein": wd,
        "tvd": tvd,
        "ground_metric": "numeric" if ordinal else "discrete",
        "real_freq": p.tolist(),
        "synthetic_freq": q.tolist(),
    }


def unigram_fidelity(
    real_texts: Sequence[str], synthetic_texts: Sequence[str], *, top_k: int = 1000, alpha: float = 1.0
) -> dict[str, float]:
    """Divergence of word unigram frequencies over the real side's ``top_k`` words plus an "other words" bucket.

    The vocabulary is chosen on the real texts (the reference distribution) because the question is "does the
    synthetic text use the real data's common words as often". It is an internal statistic: only the divergences
    are returned, never the words. ``unigram_wasserstein`` places bucket ``i`` (the real side's ``i``-th most frequent
    word; the other-words bucket last) at position ``i / top_k``, so it is the average distance, in units of the whole
    ranked vocabulary, that word mass must move along the real frequency ranking (0: same; at most 1).
    Returns ``{"kl", "wasserstein", "vocabulary_size", "real_oov_rate", "synthetic_oov_rate"}``.
    """
    real_counts = Counter(w for t in real_texts for w in words(t))
    synth_counts = Counter(w for t in synthetic_texts for w in words(t))
    if not real_counts or not synth_counts:
        raise ValueError("both sides need at least one word")
    vocab = [w for w, _ in sorted(real_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    k = len(vocab)

    def vector(counts: Counter[str]) -> np.ndarray:
        v = np.array([counts.get(w, 0) for w in vocab] + [0], dtype=float)
        v[-1] = sum(counts.values()) - v[:-1].sum()
        return v

    rv, sv = vector(real_counts), vector(synth_counts)
    pos = np.arange(k + 1) / max(k, 1)
    return {
        "kl": smoothed_kl(rv, sv, alpha),
        "wasserstein": float(wasserstein_distance(pos, pos, u_weights=rv + alpha, v_weights=sv + alpha)),
        "vocabulary_size": float(k),
        "real_oov_rate": float(rv[-1] / rv.sum()),
        "synthetic_oov_rate": float(sv[-1] / sv.sum()),
    }


def max_cosine_similarity(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """For each row of ``queries``, its largest dot product with a row of ``pool`` (cosine for unit-norm rows)."""
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    p = np.ascontiguousarray(pool, dtype=np.float32)
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1] or len(p) == 0:
        raise ValueError("queries and pool must be 2-D arrays with the same width and a non-empty pool")
    if len(q) == 0:
        return np.zeros(0, dtype=np.float32)
    index = faiss.IndexFlatIP(p.shape[1])
    index.add(p)
    sims, _ = index.search(q, 1)
    return np.clip(sims[:, 0], -1.0, 1.0)


def nearest_real_similarity(
    real_embeddings: np.ndarray, synthetic_embeddings: np.ndarray, *, seed: int = 0
) -> dict[str, Any]:
    """Distributions of the nearest-real-record cosine similarity, synthetic vs held-out real (a "Figure 2").

    The real records are split at random into a held-out half ``A`` and a pool ``B``. ``synthetic`` holds, for each
    synthetic record, its largest cosine similarity to a record of ``B``; ``reference`` holds the same for each
    record of ``A`` (a real record never meets itself, the halves being disjoint). Both use the same pool ``B``, so
    they are comparable: synthetic records that sit much closer to real ones than real records sit to each other
    suggest copying; much farther, that they are off-distribution. Returns both arrays and their means and medians.
    """
    real = np.asarray(real_embeddings, dtype=np.float32)
    if len(real) < 2:
        raise ValueError("need at least two real records for the real-to-real reference")
    order = np.random.default_rng(seed).permutation(len(real))
    held_out, pool = real[order[: len(real) // 2]], real[order[len(real) // 2 :]]
    synthetic = max_cosine_similarity(np.asarray(synthetic_embeddings, dtype=np.float32), pool)
    reference = max_cosine_similarity(held_out, pool)
    out: dict[str, Any] = {"synthetic": synthetic, "reference": reference}
    for name, values in (("synthetic", synthetic), ("reference", reference)):
        out[f"{name}_mean"] = float(values.mean()) if len(values) else None
        out[f"{name}_median"] = float(np.median(values)) if len(values) else None
    return out


def fit_sentiment(
    train_embeddings: np.ndarray, train_ratings: Sequence[float], *, C: float = 1.0
) -> Callable[[np.ndarray], np.ndarray]:
    """A local sentiment score: logistic regression from sentence embeddings to the star rating.

    Trained on the REAL training split (embeddings -> rating), applied to the real test split and to synthetic
    records. The score is the expected rating under the predicted class probabilities, on the star scale. It is used
    only inside :func:`correlation_difference` (an internal statistic), never released.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(train_ratings, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError("the sentiment model needs at least two distinct ratings in its training data")
    clf = LogisticRegression(C=C, max_iter=1000).fit(np.asarray(train_embeddings), y)
    classes = clf.classes_.astype(float)

    def score(embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(clf.predict_proba(np.asarray(embeddings)) @ classes, dtype=float)

    return score


def correlation_matrix(columns: Mapping[str, Sequence[float] | np.ndarray]) -> np.ndarray:
    """Spearman correlation matrix of the columns, in their order.

    Spearman (rank) because rating is ordinal and length is skewed. A constant column has no defined correlation; it is
    given correlation 0 with every other column (and 1 with itself), so a synthetic set that lost all variation in a
    quantity is penalised rather than dropped.

    >>> correlation_matrix({"a": [1, 2, 3], "b": [3, 2, 1], "c": [5, 5, 5]}).tolist()
    [[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    data = np.column_stack([np.asarray(v, dtype=float) for v in columns.values()])
    k = data.shape[1]
    if data.shape[0] < 2:
        raise ValueError("need at least two rows")
    out = np.eye(k)
    varying = [j for j in range(k) if np.ptp(data[:, j]) > 0]
    if len(varying) >= 2:
        rho = np.corrcoef(rankdata(data[:, varying], axis=0), rowvar=False)  # Pearson of ranks = Spearman
        out[np.ix_(varying, varying)] = rho
        np.fill_diagonal(out, 1.0)
    return out


def correlation_difference(
    real_columns: Mapping[str, Sequence[float] | np.ndarray],
    synthetic_columns: Mapping[str, Sequence[float] | np.ndarray],
) -> dict[str, Any]:
    """How well pairwise correlations (e.g. rating, length, sentiment) are preserved.

    Returns ``{"names", "real", "synthetic", "frobenius", "max_abs"}``: both correlation matrices (lists) and the
    Frobenius norm and largest absolute entry of their difference (0: perfectly preserved).
    """
    if list(real_columns) != list(synthetic_columns):
        raise ValueError("real and synthetic columns must have the same names in the same order")
    r, s = correlation_matrix(real_columns), correlation_matrix(synthetic_columns)
    diff = r - s
    return {
        "names": list(real_columns),
        "real": r.tolist(),
        "synthetic": s.tolist(),
        "frobenius": float(np.linalg.norm(diff)),
        "max_abs": float(np.abs(diff).max()),
    }
