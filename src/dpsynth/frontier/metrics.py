"""Scoring the rows of a frontier with the evaluate stage's own metric functions (it owns no metric of its own).

For every row and label: train-on-X, test-on-real accuracy and macro-F1 of each classifier family
(:func:`dpsynth.evaluate.utility.train_and_test`), the code agreement of synthetic rows
(:func:`dpsynth.evaluate.agreement.code_agreement`), the DP logistic regression on the real training split at the
row's epsilon (:func:`dpsynth.evaluate.utility.dp_train_and_test`); per row, MAUVE against the real test split
(:func:`dpsynth.evaluate.mauve_metric.mauve_over_draws`) and the quality shares
(:func:`dpsynth.evaluate.quality.quality_counts`).

MAUVE is measured twice. ``mauve`` compares a row's records with the real test records as they are; ``mauve_bounded``
compares them at one length budget: every text on both sides cut to ``generate.max_new_tokens`` tokens by the rule that
cuts training responses (``data.cut_responses``, :func:`dpsynth.data.format.bounded_text`), so a synthetic record,
which can never be longer than that, is unchanged and a long real review loses its tail. Why both: MAUVE reads length
(mauve-text itself truncates both sides to one ``max_text_length``), and on Yelp the real test reviews average 106
words against the 64-token generators' 33-42: there the same eps-4 records score 0.51 against the whole reviews and
0.71 at the bound, real records 0.955 and 0.957 (``bench/results/frontier-length-bound/``). The budget is public (a
configured setting), the cut reads one record at a time.

The real references (the test split, capped at ``evaluate.max_records`` by a seeded draw, and the whole real training
split) are read and embedded once, so every row is scored against exactly the same test records. Like every number in
a run's metrics.json, these read the private data: the frontier's outputs are not DP.

Their embeddings are kept in ``DIR/data/embeddings-<digest>.npy`` (private like the ``train.jsonl`` beside them, and
never copied out of ``DIR/data``): a resumed sweep does not embed 5,000 records again, and the in-process memo of
:func:`dpsynth.evaluate.embeddings.embed` hands them to every Private Evolution row, which votes with the same vectors.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.data.canaries import read_canaries
from dpsynth.data.format import CutRule, bounded_text
from dpsynth.data.prepare import load_code_specs, load_prepare_info, prepared_cut_rule
from dpsynth.data.records import read_records
from dpsynth.errors import DPSynthError
from dpsynth.evaluate.agreement import code_agreement
from dpsynth.evaluate.collect import sample
from dpsynth.evaluate.labels import default_labels, derive_labels, label_domains
from dpsynth.evaluate.utility import LabeledSet, dp_train_and_test, train_and_test
from dpsynth.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class Reference:
    """The real data every row is scored against: the capped test split and the whole real training split, and the
    test split cut to the generators' length budget (``bound``, ``test_emb_bounded``: the length-matched MAUVE)."""

    labels: list[str]
    domains: dict[str, tuple[Any, ...]]
    test_texts: list[str]
    test_labels: list[dict[str, Any]]
    test_emb: np.ndarray
    train_texts: list[str]
    train_labels: list[dict[str, Any]]
    train_emb: np.ndarray
    unit_contribution: int
    bound: Callable[[str], str]
    test_emb_bounded: np.ndarray

    def labeled(self, which: str, label: str) -> LabeledSet:
        texts, labels, emb = (
            (self.test_texts, self.test_labels, self.test_emb)
            if which == "test"
            else (self.train_texts, self.train_labels, self.train_emb)
        )
        idx = [i for i, lab in enumerate(labels) if label in lab]
        return LabeledSet([texts[i] for i in idx], [labels[i][label] for i in idx], emb[idx])

    def majority(self, label: str) -> float | None:
        train = [lab[label] for lab in self.train_labels if label in lab]
        test = [lab[label] for lab in self.test_labels if label in lab]
        if not train or not test:
            return None
        top = Counter(train).most_common(1)[0][0]
        return float(np.mean([y == top for y in test]))


def stored_embeddings(texts: list[str], folder: Path) -> np.ndarray:
    """``embed(texts)``, kept in ``folder`` under the digest of the texts (and the model): computed once per data set.

    A stored file that does not hold one row per text is embedded again (and replaced), never trusted.
    """
    from dpsynth.evaluate.embeddings import EMBEDDING_DIM, embed, model_path, remember

    h = hashlib.sha256(model_path().name.encode())
    for text in texts:
        h.update(hashlib.sha256(text.encode("utf-8")).digest())
    path = folder / f"embeddings-{h.hexdigest()[:16]}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape == (len(texts), EMBEDDING_DIM):
            remember(texts, vectors)
            return vectors
        log.warning("frontier: %s does not match its texts; embedding them again", path.name)
    vectors = embed(texts, memo=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)  # whole or absent: a crash leaves no half-written store
    return vectors


def load_reference(cfg: Config, root: RunDir) -> Reference:
    """Read and embed the frontier's real references once (kept in ``DIR/data`` for a resumed sweep)."""

    specs = load_code_specs(root)
    info = load_prepare_info(root)
    names = [s.name for s in specs]
    labels = cfg.frontier.labels or default_labels(names)
    domains = label_domains({s.name: s.values for s in specs}, labels)
    unknown = [lab for lab in labels if lab not in domains]
    if unknown:
        from dpsynth.errors import ConfigError

        raise ConfigError(f"frontier.labels: {unknown} are not codes of this data set (codes: {names})")
    canaries = {c.unit for c in read_canaries(root.canaries)} if root.canaries.is_file() else set()
    train = [r for r in read_records(root.train) if r.unit not in canaries]
    test = sample(read_records(root.test), cfg.evaluate.max_records, cfg.evaluate.seed, "test")
    log.info("frontier: embedding %d real training and %d test records", len(train), len(test))
    bound = length_bound(cfg, prepared_cut_rule(info))  # the rule the rows' training data were cut by
    return Reference(
        labels=labels,
        domains=domains,
        test_texts=[r.text for r in test],
        test_labels=[derive_labels(r.codes, labels) for r in test],
        test_emb=stored_embeddings([r.text for r in test], root.data_dir),
        train_texts=[r.text for r in train],
        train_labels=[derive_labels(r.codes, labels) for r in train],
        train_emb=stored_embeddings([r.text for r in train], root.data_dir),
        unit_contribution=int(info.get("max_records_per_user", 1)),
        bound=bound,
        test_emb_bounded=stored_embeddings([bound(r.text) for r in test], root.data_dir),
    )


def length_bound(cfg: Config, rule: CutRule) -> Callable[[str], str]:
    """A text cut to ``generate.max_new_tokens`` tokens of the run's model by ``rule`` (the prepared data's
    ``cut_responses``, as training reads it): the budget that bounds every synthetic record, applied to both sides of
    the length-matched MAUVE."""
    from dpsynth.models.loader import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    budget = cfg.generate.max_new_tokens
    return lambda text: bounded_text(tokenizer, text, budget, rule)


def _mauve(emb: np.ndarray, test_emb: np.ndarray, seed: int, repeats: int = 1) -> tuple[float | None, float | None]:
    """MAUVE's mean and standard deviation over ``repeats`` draws against the real test split's vectors
    (:func:`dpsynth.evaluate.mauve_metric.mauve_over_draws`; draw 0 is the single figure of earlier sweeps)."""
    from dpsynth.evaluate.mauve_metric import mauve_over_draws

    if min(len(emb), len(test_emb)) < 2:
        return None, None
    draws = mauve_over_draws(emb, test_emb, repeats=repeats, seed=seed)
    return draws.mean, draws.sd


def _row_mauve(
    cfg: Config, ref: Reference, row: dict[str, Any], texts: list[str], emb: np.ndarray, *, memo: bool
) -> tuple[float | None, float | None, float | None, float | None]:
    """(mauve, sd, mauve_bounded, sd): against the test split as it is, and with both sides cut to the length budget
    (a record within it keeps its vector)."""
    from dpsynth.evaluate.embeddings import embed_bounded

    out: list[float | None] = []
    emb_bounded = embed_bounded(texts, emb, ref.bound, memo=memo)
    for vectors, test in ((emb, ref.test_emb), (emb_bounded, ref.test_emb_bounded)):
        try:
            out.extend(_mauve(vectors, test, cfg.evaluate.seed, cfg.frontier.mauve_repeats))
        except ValueError as exc:  # e.g. too few points for the clustering
            log.warning("frontier: MAUVE of row %s not measured (%s)", row["key"], exc)
            out.extend((None, None))
    return out[0], out[1], out[2], out[3]


def score_row(
    cfg: Config,
    ref: Reference,
    row: dict[str, Any],
    records: list[dict[str, Any]],
    *,
    synthetic: bool,
    dp_logreg: bool = True,
) -> list[dict[str, Any]]:
    """One frontier entry per (label, classifier) for a row's training records (``dp_logreg``: also the DP logistic
    regression on the real training split at the row's epsilon, which does not read the row's records)."""
    from dpsynth.evaluate.embeddings import embed
    from dpsynth.evaluate.quality import quality_counts

    texts = [str(r["text"]) for r in records]
    emb = embed(texts, memo=not synthetic)  # real rows: the reference's vectors of the same records
    labels = [derive_labels(r.get("codes") or {}, ref.labels) for r in records]
    mauve, mauve_sd, mauve_bounded, mauve_bounded_sd = _row_mauve(cfg, ref, row, texts, emb, memo=not synthetic)
    quality = quality_counts(texts)["rates"]
    eps = row["eps"]
    dp_eps = float(eps) if isinstance(eps, (int, float)) and eps > 0 else None
    out = []
    for label in ref.labels:
        test = ref.labeled("test", label)
        idx = [i for i, lab in enumerate(labels) if label in lab]
        train = LabeledSet([texts[i] for i in idx], [labels[i][label] for i in idx], emb[idx])
        agreement = None
        if synthetic:
            real = ref.labeled("train", label)
            agreement = code_agreement(real.features(), list(real.labels), train.features(), list(train.labels))
            agreement = agreement["agreement"]
        for family in cfg.frontier.classifiers:
            if len(set(test.labels)) < 2:
                continue  # one class in the test split: no task
            result, _ = train_and_test(train, test, family)
            entry = {
                "eps": eps,
                "row": row["key"],
                "label": label,
                "classifier": family,
                "accuracy": result.get("accuracy"),
                "macro_f1": result.get("macro_f1"),
                "status": result["status"],
                "n_train": len(train.labels),
                "n_test": len(test.labels),
                "majority_accuracy": ref.majority(label),
                "mauve": mauve,
                "mauve_sd": mauve_sd,
                "mauve_repeats": cfg.frontier.mauve_repeats,
                "mauve_bounded": mauve_bounded,
                "mauve_bounded_sd": mauve_bounded_sd,
                "code_agreement": agreement,
                "well_formed": quality.get("well_formed"),
                "seconds": sum(row.get("seconds", {}).values()),
                # each stage's share (train, generate; evaluate is added by run.py): where a row's time goes
                **{f"seconds_{k}": v for k, v in row.get("seconds", {}).items()},
                "dp_logreg_accuracy": None,
                "dp_logreg_macro_f1": None,
            }
            if dp_eps is not None and dp_logreg:
                real = ref.labeled("train", label)
                dp = dp_train_and_test(
                    real,
                    test,
                    family,
                    ref.domains[label],
                    dp_eps,
                    unit_contribution=ref.unit_contribution,
                )  # fresh noise, as in the evaluate stage: a DP mechanism's noise is never a fixed seed
                entry["dp_logreg_accuracy"] = dp["accuracy"]
                entry["dp_logreg_macro_f1"] = dp["macro_f1"]
            out.append(entry)
    return out


DRAW_KEYS = ("accuracy", "macro_f1", "mauve", "mauve_bounded", "code_agreement", "well_formed")
"""The figures that ``frontier.draws`` averages over a row's draws (each draw's list kept as ``<key>_draws``)."""


def score_draws(
    cfg: Config, ref: Reference, row: dict[str, Any], records: list[dict[str, Any]], *, draws: int
) -> list[dict[str, Any]]:
    """A generated row's entries over ``draws`` disjoint slices of its records, each scored as a row of its own
    (:func:`score_row`) and combined (:func:`combine_draws`). The slices are independent draws because every record's
    codes and text are drawn independently; the DP logistic regression, which reads no synthetic record, runs once."""
    n = len(records) // draws
    if n < 1 or n * draws != len(records):
        raise DPSynthError(f"frontier: row {row['key']} holds {len(records)} records, not {draws} draws of equal size")
    per = [
        score_row(cfg, ref, row, records[i * n : (i + 1) * n], synthetic=True, dp_logreg=i == 0) for i in range(draws)
    ]
    return combine_draws(per)


def combine_draws(per_draw: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per (label, classifier): the first draw's, with each of :data:`DRAW_KEYS` replaced by its mean over
    the draws and the draws' values kept beside it (``accuracy_draws``; a figure some draw lacks has no mean, its list
    shows which), ``n_train_draws`` and ``status_draws`` likewise, ``mauve_sd`` (the repeats' spread within a draw)
    averaged over the draws, and ``draws`` saying how many.

    >>> a = [{"label": "rating", "classifier": "tfidf", "accuracy": 0.5, "mauve": 0.4, "macro_f1": None}]
    >>> b = [{"label": "rating", "classifier": "tfidf", "accuracy": 0.7, "mauve": None, "macro_f1": None}]
    >>> (e,) = combine_draws([a, b])
    >>> round(e["accuracy"], 3), e["accuracy_draws"], e["draws"], e["macro_f1"], "macro_f1_draws" in e
    (0.6, [0.5, 0.7], 2, None, False)
    >>> e["mauve"], e["mauve_draws"]
    (None, [0.4, None])
    """
    out = []
    for entries in zip(*per_draw, strict=True):
        if len({(e["label"], e["classifier"]) for e in entries}) != 1:
            raise DPSynthError("frontier: the draws of a row were scored on different labels or classifiers")
        entry = {**entries[0], "draws": len(entries)}
        for key in ("n_train", "status"):
            if key in entries[0]:
                entry[f"{key}_draws"] = [e.get(key) for e in entries]
        for key in DRAW_KEYS:
            values = [e.get(key) for e in entries]
            if all(v is None for v in values):
                continue
            entry[f"{key}_draws"] = [None if v is None else float(v) for v in values]
            entry[key] = None if any(v is None for v in values) else float(np.mean(values))
        for key in ("mauve_sd", "mauve_bounded_sd"):
            if key in entries[0]:
                sds = [e.get(key) for e in entries]
                entry[key] = None if any(v is None for v in sds) else float(np.mean(sds))
        out.append(entry)
    return out
