"""The fidelity section: each arm's synthetic records against the real test split, metric by metric.

Thin orchestration of :mod:`dpsynth.evaluate.fidelity` (see there for each metric's definition). Reference values,
recorded under the arm ``real``, say what "close" means at this sample size:

* nearest-real similarity: held-out real test records against the same real pool;
* MAUVE: real training records in place of the synthetic ones, as many as an arm has; MAUVE at the length bound
  (``fidelity.mauve_bounded``): the same with every text on both sides cut to the generators' token budget
  (:func:`dpsynth.data.format.bounded_text`), so that length, which no generator under the budget can match, does not
  dominate it (:mod:`dpsynth.frontier.metrics` says why, with numbers);
* correlation preservation: the real test split against a part of the real training sample that the sentiment model
  was not fitted on (fitting and measuring on the same records would inflate the sentiment column's correlations).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from dpsynth.data.roles import NOMINAL, ORDINAL, positions
from dpsynth.evaluate.collect import EvalInputs, MetricList
from dpsynth.evaluate.config import EvaluateConfig
from dpsynth.evaluate.fidelity import (
    code_fidelity,
    correlation_difference,
    fit_sentiment,
    length_fidelity,
    nearest_real_similarity,
    token_lengths,
    unigram_fidelity,
)
from dpsynth.evaluate.mauve_metric import MauveDraws, mauve_over_draws

T = TypeVar("T")


@dataclass
class Embeddings:
    """Unit-norm sentence embeddings of every sample the metrics use, computed once."""

    train: np.ndarray  # the capped real training sample (no canaries)
    canaries: np.ndarray
    test: np.ndarray
    synthetic: dict[str, np.ndarray]


def attempt(notes: list[str], what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``fn(*args, **kwargs)``, or None with a note when the metric is undefined on these samples (the library raises
    ValueError for too few records, no words, a single class, ...). Any other exception is a bug and propagates."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        notes.append(f"{what}: not computed ({exc})")
        return None


def fidelity_section(
    inputs: EvalInputs,
    emb: Embeddings,
    tokenizer: Any,
    e: EvaluateConfig,
    metrics: MetricList,
    notes: list[str],
    bound: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """Every fidelity metric for every arm; returns the ``distributions`` entries it produces. ``bound``: a text cut to
    the generators' length budget, for MAUVE at the bound (left out without it)."""
    real_texts = [r.text for r in inputs.test]
    synth_texts = {arm: [str(row["text"]) for row in rows] for arm, rows in inputs.synthetic.items()}
    dist: dict[str, Any] = {"length_tokens": {"real": token_lengths(real_texts, tokenizer)}}
    for arm, texts in synth_texts.items():
        dist["length_tokens"][arm] = token_lengths(texts, tokenizer)
        length = attempt(notes, f"length ({arm})", length_fidelity, real_texts, texts, tokenizer, bins=e.length_bins)
        uni = attempt(notes, f"unigram ({arm})", unigram_fidelity, real_texts, texts, top_k=e.unigram_top_k)
        n, n_real = len(texts), len(real_texts)
        metrics.add("fidelity.length.kl", "fidelity", arm, _get(length, "kl"), "length_kl", n=n, n_real=n_real)
        metrics.add(
            "fidelity.length.wasserstein",
            "fidelity",
            arm,
            _get(length, "wasserstein"),
            "length_wasserstein",
            n=n,
            n_real=n_real,
        )
        metrics.add("fidelity.unigram.kl", "fidelity", arm, _get(uni, "kl"), "unigram_kl", n=n, n_real=n_real)
        metrics.add(
            "fidelity.unigram.wasserstein",
            "fidelity",
            arm,
            _get(uni, "wasserstein"),
            "unigram_wasserstein",
            n=n,
            n_real=n_real,
        )
    _codes(inputs, metrics, notes, dist)
    _similarity(inputs, emb, e, metrics, notes, dist)
    if bound is not None:
        _mauve_bounded(inputs, emb, e, metrics, notes, bound)
    _correlation(inputs, emb, e, tokenizer, metrics, notes, dist)
    return dist


def _codes(inputs: EvalInputs, metrics: MetricList, notes: list[str], dist: dict[str, Any]) -> None:
    """KL and Wasserstein of each control code over its public domain (every code alike, positions for ordinal ones);
    frequencies for the report's bar charts, and how many code cells each arm's records fill."""
    for spec in inputs.specs:
        role = inputs.roles.get(spec.name, NOMINAL)
        pos = positions(spec, role)
        real = [r.codes[spec.name] for r in inputs.test if spec.name in r.codes]
        entry: dict[str, Any] = {"domain": list(spec.values), "role": role, "label": spec.name == inputs.label}
        for arm, rows in inputs.synthetic.items():
            synth = [row["codes"][spec.name] for row in rows if spec.name in (row.get("codes") or {})]
            out = attempt(
                notes,
                f"{spec.name} ({arm})",
                code_fidelity,
                real,
                synth,
                spec.values,
                positions=pos,
                ordinal=role == ORDINAL,
            )
            if out is not None:
                entry["real"] = out["real_freq"]
                entry[arm] = out["synthetic_freq"]
            extra = {
                "tvd": _get(out, "tvd"),
                "ground_metric": _get(out, "ground_metric"),
                "n": len(synth),
                "n_real": len(real),
            }
            metrics.add(f"fidelity.{spec.name}.kl", "fidelity", arm, _get(out, "kl"), "code_kl", spec.name, **extra)
            metrics.add(
                f"fidelity.{spec.name}.wasserstein",
                "fidelity",
                arm,
                _get(out, "wasserstein"),
                "code_wasserstein",
                spec.name,
                **extra,
            )
        dist[spec.name] = entry
    dist["code_coverage"] = code_coverage(inputs)


#: An arm's records "collapsed" onto a few code cells when they fill fewer than this share of the cells that as many
#: draws from the real test split's code distribution would fill (a DP histogram whose noise wiped out most cells).
COLLAPSE_SHARE = 0.5
#: A code value is reported absent from an arm when the real distribution expects at least this many of its records.
ABSENT_MIN_EXPECTED = 3.0


def code_coverage(inputs: EvalInputs) -> dict[str, Any] | None:
    """How many cells of the joint code domain each arm's records fill, against the number that ``n`` draws from the
    real test split's code distribution fill on average (``sum_c 1 - (1 - p_c)^n``), and which code values the real
    data expects at least :data:`ABSENT_MIN_EXPECTED` times in ``n`` records but the arm never has."""
    names = [s.name for s in inputs.specs]
    if not names:
        return None
    real = Counter(tuple(r.codes[n] for n in names) for r in inputs.test if all(n in r.codes for n in names))
    total = sum(real.values())
    if not total:
        return None
    cells = int(np.prod([len(s.values) for s in inputs.specs]))
    out: dict[str, Any] = {"names": names, "cells": cells, "real_cells": len(real), "n_real": total, "arms": {}}
    for arm, rows in inputs.synthetic.items():
        keys = [
            tuple(row["codes"][n] for n in names) for row in rows if all(n in (row.get("codes") or {}) for n in names)
        ]
        n = len(keys)
        expected = float(sum(1.0 - (1.0 - k / total) ** n for k in real.values()))
        absent: dict[str, list[Any]] = {}
        for i, spec in enumerate(inputs.specs):
            have = {k[i] for k in keys}
            real_marginal = Counter(k[i] for k in real.elements())
            gone = [v for v in spec.values if v not in have and n * real_marginal[v] / total >= ABSENT_MIN_EXPECTED]
            if gone:
                absent[spec.name] = gone
        out["arms"][arm] = {
            "n": n,
            "cells": len(set(keys)),
            "expected_cells": expected,
            "absent": absent,
            "collapsed": bool(n and len(set(keys)) < COLLAPSE_SHARE * expected),
        }
    return out


def _similarity(
    inputs: EvalInputs, emb: Embeddings, e: EvaluateConfig, metrics: MetricList, notes: list[str], dist: dict[str, Any]
) -> None:
    """Nearest-real similarity and MAUVE, with their real-vs-real references."""
    nn: dict[str, Any] = {}
    for arm, vectors in emb.synthetic.items():
        out = attempt(
            notes, f"nearest-real similarity ({arm})", nearest_real_similarity, emb.test, vectors, seed=e.seed
        )
        if out is not None:
            if "reference" not in nn:  # the same real halves for every arm (same seed): record the reference once
                nn["reference"] = out["reference"]
                for stat in ("mean", "median"):
                    metrics.add(
                        f"fidelity.nn_similarity.{stat}",
                        "fidelity",
                        "real",
                        out[f"reference_{stat}"],
                        "nn_similarity",
                        f"{stat}; arm real: the held-out real records (the reference)",
                        n=len(out["reference"]),
                    )
            nn[arm] = out["synthetic"]
        for stat in ("mean", "median"):
            metrics.add(
                f"fidelity.nn_similarity.{stat}",
                "fidelity",
                arm,
                _get(out, f"synthetic_{stat}"),
                "nn_similarity",
                stat,
                reference=_get(out, f"reference_{stat}"),
                n=len(vectors),
                n_real=len(emb.test),
            )
        _add_mauve(metrics, arm, attempt(notes, f"MAUVE ({arm})", _draws, emb.test, vectors, e), len(vectors), e)
    dist["nearest_real_similarity"] = nn or None
    # Reference: real training records in place of synthetic ones, as many as the largest arm has, against the same
    # test sample, so that the score's sample-size bias is the same as the arms' (MAUVE on a few dozen points is far
    # from its large-sample value).
    pick = _reference_pick(emb, e)
    ref = attempt(notes, "MAUVE (real reference)", _draws, emb.test, emb.train[pick], e)
    _add_mauve(metrics, "real", ref, len(pick), e, _REFERENCE.format(len(pick)))


_REFERENCE = "arm real: {} real training records in place of the synthetic ones (the reference)"


def _reference_pick(emb: Embeddings, e: EvaluateConfig) -> np.ndarray:
    """The real training records that stand in for an arm in MAUVE's reference, as many as the largest arm has (the
    same sample-size bias): one seeded draw, so MAUVE and MAUVE at the bound read the same records."""
    n_ref = min(len(emb.train), max((len(v) for v in emb.synthetic.values()), default=0))
    return np.sort(np.random.default_rng(e.seed).permutation(len(emb.train))[:n_ref])


def _mauve_bounded(
    inputs: EvalInputs,
    emb: Embeddings,
    e: EvaluateConfig,
    metrics: MetricList,
    notes: list[str],
    bound: Callable[[str], str],
) -> None:
    """MAUVE of each arm and of the real reference with every text on both sides cut by ``bound``: the same samples,
    draws and seeds as ``fidelity.mauve``, so the two differ by the cut alone."""
    from dpsynth.evaluate.embeddings import embed_bounded

    test = embed_bounded([r.text for r in inputs.test], emb.test, bound)
    for arm, vectors in emb.synthetic.items():
        mine = embed_bounded([str(row["text"]) for row in inputs.synthetic[arm]], vectors, bound)
        draws = attempt(notes, f"MAUVE at the bound ({arm})", _draws, test, mine, e)
        _add_mauve(metrics, arm, draws, len(vectors), e, name="fidelity.mauve_bounded")
    pick = _reference_pick(emb, e)
    ref = embed_bounded([inputs.train[i].text for i in pick], emb.train[pick], bound)
    draws = attempt(notes, "MAUVE at the bound (real reference)", _draws, test, ref, e)
    _add_mauve(metrics, "real", draws, len(pick), e, _REFERENCE.format(len(pick)), name="fidelity.mauve_bounded")


def _draws(test: np.ndarray, other: np.ndarray, e: EvaluateConfig) -> MauveDraws:
    return mauve_over_draws(other, test, repeats=e.mauve_repeats, seed=e.seed)


def _add_mauve(
    metrics: MetricList,
    arm: str,
    draws: MauveDraws | None,
    n: int,
    e: EvaluateConfig,
    qualifier: str | None = None,
    *,
    name: str = "fidelity.mauve",
) -> None:
    """MAUVE's mean over ``evaluate.mauve_repeats`` draws, with their standard deviation (``sd``) beside it: one
    draw moves by several points, so a difference between arms smaller than the spread is not a difference."""
    mean, sd = (None, None) if draws is None else (draws.mean, draws.sd)
    size = n if draws is None else draws.n  # each draw compares equal-size samples
    key = name.removeprefix("fidelity.")
    metrics.add(name, "fidelity", arm, mean, key, qualifier, sd=sd, repeats=e.mauve_repeats, n=size, n_real=size)


def _get(d: dict[str, Any] | None, key: str) -> Any:
    return None if d is None else d[key]


def _correlation(
    inputs: EvalInputs,
    emb: Embeddings,
    e: EvaluateConfig,
    tokenizer: Any,
    metrics: MetricList,
    notes: list[str],
    dist: dict[str, Any],
) -> None:
    """Preservation of the (label, length, sentiment) Spearman correlations, against a real-vs-real reference; the
    label is the ordinal code ``data.label`` names (``rating`` by default), at its positions.

    The sentiment score is a logistic regression on real training embeddings (:func:`fit_sentiment`). The training
    sample is split at random: ``n_ref = min(len(test), len(train) // 2)`` records form the reference side, the rest
    fit the sentiment model, so no record is scored by a model fitted on it.
    """
    label = next((s for s in inputs.specs if s.name == inputs.label), None)
    pos = positions(label, inputs.roles.get(label.name, NOMINAL)) if label is not None else None
    if label is None or pos is None:
        why = "no label code" if label is None else f"the label code {label.name!r} is nominal"
        notes.append(f"correlation preservation: not computed ({why}; set data.label and data.code_roles)")
        return
    name = label.name
    train_ratings = np.array([pos[r.codes[name]] for r in inputs.train], dtype=float)
    order = np.random.default_rng(e.seed).permutation(len(inputs.train))
    n_ref = min(len(inputs.test), len(inputs.train) // 2)
    ref_idx, fit_idx = order[:n_ref], order[n_ref:]
    score = attempt(
        notes,
        "sentiment model",
        fit_sentiment,
        emb.train[fit_idx],
        [float(v) for v in train_ratings[fit_idx]],
    )
    if score is None:
        for arm in [*inputs.synthetic, "real"]:
            for stat in ("frobenius", "max_abs"):
                metrics.add(f"fidelity.correlation.{stat}", "fidelity", arm, None, f"correlation_{stat}")
        return

    def columns(texts: list[str], values: list[Any], vectors: np.ndarray) -> dict[str, np.ndarray]:
        return {
            name: np.asarray([pos[v] for v in values], dtype=float),
            "length": token_lengths(texts, tokenizer).astype(float),
            "sentiment": score(vectors),
        }

    real = columns([r.text for r in inputs.test], [r.codes[name] for r in inputs.test], emb.test)
    sides = {
        arm: columns([str(x["text"]) for x in rows], [x["codes"][name] for x in rows], emb.synthetic[arm])
        for arm, rows in inputs.synthetic.items()
    }
    sides["real"] = columns(
        [inputs.train[i].text for i in ref_idx], [inputs.train[i].codes[name] for i in ref_idx], emb.train[ref_idx]
    )
    matrices: dict[str, Any] = {}
    for arm, cols in sides.items():
        out = attempt(notes, f"correlation ({arm})", correlation_difference, real, cols)
        qualifier = "arm real: a held-out part of the real training split vs the test split (the reference)"
        q = qualifier if arm == "real" else None
        n = len(next(iter(cols.values())))
        extra = {"n": n, "n_real": len(inputs.test), "label": name}
        metrics.add(
            "fidelity.correlation.frobenius",
            "fidelity",
            arm,
            _get(out, "frobenius"),
            "correlation_frobenius",
            q,
            **extra,
        )
        metrics.add(
            "fidelity.correlation.max_abs", "fidelity", arm, _get(out, "max_abs"), "correlation_max_abs", q, **extra
        )
        if out is not None:
            matrices["names"], matrices["test"] = out["names"], out["real"]
            matrices["reference" if arm == "real" else arm] = out["synthetic"]
    dist["correlation"] = matrices or None
