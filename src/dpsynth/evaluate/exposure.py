"""Exposure of canary secrets (Carlini et al., "The Secret Sharer", USENIX Security 2019).

A canary is a fake record with a random secret (6 digits) planted once in the training data. If the model memorised
it, the canary text with the true secret is more likely than with other secrets. The *exposure* of a secret ``s`` from
a space ``S`` is ``log2 |S| - log2 rank(s)``, where ``rank`` is the position of ``s`` among all of ``S`` sorted by the
model's likelihood of the full canary text (rank 1: most likely; exposure ``log2 |S|``, here ~19.9 bits). A model
that learned nothing ranks ``s`` uniformly at random, which gives an expected exposure of about ``1/ln 2`` ~ 1.4 bits.

Scoring all 10^6 candidates is too slow, so this module **estimates** exposure from ``R`` candidates drawn uniformly
without replacement from ``S`` minus the true secret. Let ``r = 1 + b + t/2`` be the rank of the true secret among
the ``R + 1`` texts, where ``b`` candidates score strictly better (lower NLL) and ``t`` tie. Then ``r / (R + 1)``
estimates the share of ``S`` that ranks at least as high as ``s``, so ``rank ~ |S| r / (R + 1)`` and

    exposure_hat = log2 |S| - log2(|S| r / (R + 1)) = log2(R + 1) - log2(r).

**Cap**: when the true secret beats every candidate (``r = 1``), ``exposure_hat = log2(R + 1)`` (~10 bits for
``R = 1000``): a sample of ``R`` cannot show that fewer than ~1/R of the secrets beat ``s``, so exposures above the
cap are reported as the cap (``capped=True``); the true value may be anything up to ``log2 |S|``. An indifferent scorer
(all ties) gives ``log2((R + 1) / (1 + R/2))`` ~ 1 bit. (Carlini et al. extrapolate beyond the cap by fitting a
skew-normal to the candidates' scores; we report the sampled estimate, which never overstates.)

The scorer is a function from texts to NLLs (lower = more likely), e.g. ``lambda t: sequence_nll(model, tok, t,
reduction="sum")``: total (not mean) NLL, as in the paper; the candidates differ only in the digits, which the SmolLM2
tokenizer encodes one token each, so both reductions rank alike there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from dpsynth.evaluate.describe import MetricInfo

ScoreFn = Callable[[Sequence[str]], np.ndarray | Sequence[float]]

DESCRIPTIONS: dict[str, MetricInfo] = {
    "exposure": MetricInfo(
        "log2(R+1) - log2(rank of the true canary secret among it and R random candidates, by model likelihood); "
        "~1 bit for a model that learned nothing, capped at log2(R+1)",
        "lower",
    ),
}


def candidate_secrets(secret: str, num_candidates: int, rng: np.random.Generator) -> list[str]:
    """``num_candidates`` distinct secrets of the same format (``len(secret)`` digits), all different from ``secret``.

    >>> c = candidate_secrets("000042", 5, np.random.default_rng(0))
    >>> len(set(c)), all(len(x) == 6 and x.isdigit() and x != "000042" for x in c)
    (5, True)
    """
    if not secret.isdigit():
        raise ValueError("only digit secrets are supported")
    space = 10 ** len(secret)
    if not 0 < num_candidates < space:
        raise ValueError(f"num_candidates must be between 1 and {space - 1}")
    draws = rng.choice(space - 1, size=num_candidates, replace=False)
    true = int(secret)
    return [str(int(v) + (v >= true)).zfill(len(secret)) for v in draws]


def exposure_from_scores(true_score: float, candidate_scores: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """The estimate above from the true secret's NLL and the candidates' NLLs.

    >>> exposure_from_scores(0.0, [1.0, 2.0, 3.0])["exposure"]  # best of 4: the cap log2(4)
    2.0
    >>> exposure_from_scores(5.0, [1.0, 2.0, 3.0])["rank"]
    4.0
    """
    cand = np.asarray(candidate_scores, dtype=float)
    if cand.size == 0:
        raise ValueError("need at least one candidate")
    better = int(np.sum(cand < true_score))
    ties = int(np.sum(cand == true_score))
    rank = 1.0 + better + ties / 2.0
    cap = math.log2(cand.size + 1)
    return {
        "rank": rank,
        "exposure": cap - math.log2(rank),
        "cap": cap,
        "capped": better == 0 and ties == 0,
        "num_candidates": int(cand.size),
    }


def canary_exposure(
    canary_text: str,
    secret: str,
    score_fn: ScoreFn,
    *,
    num_candidates: int = 1000,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Exposure of one canary: its text scored with the true secret and with ``num_candidates`` random ones.

    The secret must occur exactly once in ``canary_text``; it is replaced by each candidate in turn.
    """
    if canary_text.count(secret) != 1:
        raise ValueError("the secret must occur exactly once in the canary text")
    rng = rng if rng is not None else np.random.default_rng()
    candidates = candidate_secrets(secret, num_candidates, rng)
    texts = [canary_text, *(canary_text.replace(secret, c) for c in candidates)]
    scores = np.asarray(score_fn(texts), dtype=float)
    if scores.shape != (len(texts),) or not np.all(np.isfinite(scores)):
        raise ValueError("the scorer must return one finite NLL per text")
    out = exposure_from_scores(float(scores[0]), scores[1:])
    out["space_bits"] = len(secret) * math.log2(10)
    return out


def canary_exposures(
    canaries: Sequence[Mapping[str, Any]],
    score_fn: ScoreFn,
    *,
    num_candidates: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Exposure of every canary (dicts with ``unit``, ``text`` and ``secret``) and a summary.

    Returns ``{"per_canary": [{"unit", "rank", "exposure", "capped", ...}], "mean", "max", "n_capped", "cap",
    "space_bits"}``. The candidate draws are seeded (``seed``) so that two arms are scored on the same candidates.
    """
    rng = np.random.default_rng(seed)
    per = []
    for c in canaries:
        result = canary_exposure(str(c["text"]), str(c["secret"]), score_fn, num_candidates=num_candidates, rng=rng)
        per.append({"unit": c.get("unit"), **result})
    values = [p["exposure"] for p in per]
    return {
        "per_canary": per,
        "mean": float(np.mean(values)) if values else None,
        "max": float(np.max(values)) if values else None,
        "n_capped": sum(bool(p["capped"]) for p in per),
        "cap": math.log2(num_candidates + 1),
        "space_bits": per[0]["space_bits"] if per else None,
    }
