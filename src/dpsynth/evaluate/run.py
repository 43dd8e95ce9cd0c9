"""The ``evaluate`` stage: privacy, fidelity, utility and quality of every arm, written to ``DIR/eval/metrics.json``.

:func:`evaluate_run` reads the run directory (prepared splits, canaries, each arm's synthetic records, adapters and
``privacy.json``), runs the metric library on seeded samples capped at ``evaluate.max_records`` and writes one JSON
document, atomically, that the report is built from. Its shape is a contract (``schema_version`` 1)::

    schema_version, run, metrics (flat list: name, group, arm, value, better, definition), tables, distributions,
    samples, timing_s

Every scalar metric is one entry of ``metrics`` per (name, arm); a metric that is undefined on the samples at hand
(MAUVE on one record, say) has value null and the reason is in ``run.notes``. Arms: ``dp`` and ``no_dp`` (those
present), ``real`` for real-data references and base rates, ``dp_logreg`` and the majority class for utility.

What may appear as text: synthetic records (``samples`` and quality examples, only those that neither contain a real
record nor share a word n-gram with one) and our own canaries. Before writing, every string in the document is
checked against every real record (:func:`dpsynth.evaluate.collect.assert_no_real_text`).

Cost on 2 CPU cores for a 300-record run (SmolLM2-135M, 40 synthetic records per arm): see ``timing_s`` in the
output; the language-model attacks (MIA, exposure) dominate and are bounded by ``evaluate.mia_max_records``,
``evaluate.exposure_canaries`` and ``evaluate.exposure_candidates``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.data.format import bounded_text
from dpsynth.data.prepare import generation_budget, load_prepare_info, prepared_cut_rule
from dpsynth.evaluate.collect import (
    EvalInputs,
    MetricList,
    assert_no_real_text,
    contains_real_text,
    jsonable,
    load_inputs,
    normalize_text,
)
from dpsynth.evaluate.fidelity_eval import Embeddings, fidelity_section
from dpsynth.evaluate.privacy_eval import canary_table, dcr, verbatim
from dpsynth.evaluate.text_privacy import ngram_index, word_ngrams
from dpsynth.evaluate.utility_eval import llm_settings, quality_section, utility_section
from dpsynth.rundir import SYNTHETIC_ARMS, RunDir, not_dp_privacy_json, write_json

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
_DP_FIELDS = (
    "epsilon",
    "delta",
    "accountant",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "max_grad_norm",
    "mechanisms",
    "epsilon_by_mechanism",
    "target_epsilon",
    "expected_batch_size",
    "histogram_sigma",
    "privacy_unit",
    "max_records_per_user",
    "training_units",
    "ledger",
)

# (metric name, label) shown by `dpsynth evaluate`: one line each, a column per arm. "{label}": the label code.
HEADLINE = (
    ("privacy.canary.secret_hits", "canary secrets in synthetic text"),
    ("privacy.exposure.mean", "canary exposure, mean (bits)"),
    ("privacy.mia.reference.auc", "MIA AUC (reference attack)"),
    ("privacy.dcr.median_ratio", "DCR median ratio (synthetic / test)"),
    ("fidelity.mauve", "MAUVE"),
    ("fidelity.mauve_bounded", "MAUVE at the length bound"),
    ("fidelity.nn_similarity.mean", "nearest-real similarity, mean"),
    ("fidelity.{label}.wasserstein", "{label} Wasserstein"),
    ("utility.tfidf.{label}.accuracy", "TSTR {label} accuracy (TF-IDF)"),
    ("utility.embedding.{label}.accuracy", "TSTR {label} accuracy (embedding)"),
    ("utility.code_agreement.{label}", "{label} code agreement"),
    ("quality.well_formed.rate", "well-formed share"),
)


class _Timer:
    def __init__(self, progress: bool) -> None:
        self.timing: dict[str, float] = {}
        self.level = logging.INFO if progress else logging.DEBUG

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        log.log(self.level, "evaluate: %s ...", name)
        start = time.perf_counter()
        yield
        self.timing[name] = self.timing.get(name, 0.0) + time.perf_counter() - start
        log.log(self.level, "evaluate: %s done in %.1f s", name, self.timing[name])


def evaluate_run(cfg: Config, run: RunDir, *, progress: bool = True) -> dict[str, Any]:
    """Evaluate every arm of ``run`` and write ``run.metrics_json``; returns the document written."""
    from dpsynth.evaluate.embeddings import embed
    from dpsynth.models.loader import load_tokenizer

    e = cfg.evaluate
    timer = _Timer(progress)
    start = time.perf_counter()
    metrics, notes = MetricList(), []
    tables: dict[str, Any] = {}
    dist: dict[str, Any] = {}
    with timer.section("load"):
        inputs = load_inputs(cfg, run)
        tokenizer = load_tokenizer(cfg.model)
    with timer.section("embeddings"):
        emb = Embeddings(
            train=embed([r.text for r in inputs.train]),
            canaries=embed([c.text for c in inputs.canaries]),
            test=embed([r.text for r in inputs.test]),
            synthetic={arm: embed([str(r["text"]) for r in rows]) for arm, rows in inputs.synthetic.items()},
        )
    with timer.section("privacy.text"):
        tables["canary_leakage"] = canary_table(inputs, inputs.synthetic_all, metrics)
        trained_on = np.concatenate([emb.train, emb.canaries]) if len(emb.canaries) else emb.train
        dist["dcr"] = dcr(trained_on, emb.test, emb.synthetic, metrics) or None
        tables["verbatim"] = verbatim(inputs, inputs.synthetic_all, e.ngram_n, metrics)
    if inputs.model_arms:
        from dpsynth.evaluate.model_privacy import model_privacy

        tables.update(model_privacy(cfg, run, inputs, metrics, timer.timing))
    else:
        tables["mia"] = {"columns": ["arm", "attack", "auc", "tpr_at_1pct_fpr"], "rows": []}
        notes.append("membership inference and exposure: not measured (no arm has a trained adapter)")
    with timer.section("fidelity"):
        prepared = load_prepare_info(run)
        rule = prepared_cut_rule(prepared)  # as training read it
        # the budget generation had: generate.max_new_tokens, or the released bound with data.max_tokens=auto
        budget = generation_budget(prepared, cfg.generate.max_new_tokens)
        bound = partial(bounded_text, tokenizer, max_tokens=budget, cut=rule)
        dist.update(fidelity_section(inputs, emb, tokenizer, e, metrics, notes, bound))
    with timer.section("utility"):
        llm = llm_settings(cfg, inputs, progress=progress) if e.llm_classifier else None
        tables["utility"] = utility_section(inputs, emb, e, metrics, llm=llm)
    safe = _safe_filter(inputs, e.ngram_n)
    with timer.section("quality"):
        tables["quality"] = quality_section(inputs, e, metrics, safe)
    with timer.section("samples"):
        samples = {arm: _samples(rows, safe, e.num_samples, e.seed, arm) for arm, rows in inputs.synthetic.items()}
    timer.timing["total"] = time.perf_counter() - start
    doc = {
        "schema_version": SCHEMA_VERSION,
        "run": _run_info(cfg, inputs, notes),
        "metrics": metrics.entries,
        "tables": {"canary_leakage": None, "utility": None, "quality": None, "mia": None, **tables},
        "distributions": {**dict.fromkeys(("length_tokens", "nearest_real_similarity")), **dist},
        "samples": samples,
        "timing_s": {k: round(v, 2) for k, v in timer.timing.items()},
    }
    doc = jsonable(doc)
    assert_no_real_text(doc, inputs.real_texts())
    write_json(run.metrics_json, doc)
    not_dp_privacy_json(
        run.eval_privacy_json,
        "metrics computed from the real data (test split, training members for the attacks) and every arm: not "
        "differentially private; share them only with people who may see the data",
        dp_arm_ledger=(inputs.dp_privacy or {}).get("ledger"),
    )
    log.log(timer.level, "evaluate: wrote %s in %.1f s", run.metrics_json, timer.timing["total"])
    return doc


def _safe_filter(inputs: EvalInputs, n: int) -> Callable[[str], bool]:
    """Whether a synthetic text may be shown: non-empty, containing no real record and sharing no word ``n``-gram
    with one (a memorised record, or a long piece of one, is never reprinted). The index is built on first use."""
    real = inputs.real_texts()
    cache: dict[str, Any] = {}

    def safe(text: str) -> bool:
        if not text.strip():
            return False
        if not cache:
            cache["index"] = ngram_index(real, n)
            cache["normalized"] = [normalize_text(r) for r in real]
        if not cache["index"].isdisjoint(word_ngrams(text, n)):
            return False
        return not contains_real_text(text, cache["normalized"], normalized=True)

    return safe


def _samples(
    rows: list[dict[str, Any]], safe: Callable[[str], bool], k: int, seed: int, arm: str
) -> list[dict[str, Any]]:
    """Up to ``k`` synthetic records ``{"text", "codes"}``, in a seeded random order, whose text ``safe`` accepts; the
    codes are those the record was generated from, so that a reader can check that the text matches them."""
    order = list(range(len(rows)))
    random.Random(f"dpsynth-eval-{seed}-samples-{arm}").shuffle(order)
    out: list[dict[str, Any]] = []
    for i in order:
        if len(out) >= k:
            break
        text = str(rows[i]["text"])
        if safe(text):
            out.append({"text": text, "codes": dict(rows[i].get("codes") or {})})
    return out


def _run_info(cfg: Config, inputs: EvalInputs, notes: list[str]) -> dict[str, Any]:
    info = inputs.info
    counts = info.get("counts", {})
    dp = inputs.dp_privacy
    any_privacy = next(iter(inputs.privacy.values()), {})
    n_canaries = len(inputs.canaries)
    return {
        "model": cfg.model.name,
        "privacy_unit": info.get("privacy_unit"),
        "training_units": int(any_privacy.get("training_units", counts.get("train_units", 0) + n_canaries)),
        "n_test_records": int(counts.get("test_records", len(inputs.test_all))),
        "n_synthetic": {arm: inputs.n_synthetic.get(arm, 0) for arm in SYNTHETIC_ARMS if arm in inputs.n_synthetic},
        "arms": inputs.arms,
        "dp": {k: dp[k] for k in _DP_FIELDS if k in dp} if dp and dp.get("dp") else None,
        "canaries": {"count": n_canaries, "rate": float(info.get("canary_rate", 0.0))} if n_canaries else None,
        "label": inputs.label,
        "codes": [
            {"name": s.name, "values": list(s.values), "role": inputs.roles.get(s.name, "nominal")}
            for s in inputs.specs
        ],
        "sample_sizes": {
            "train": len(inputs.train),
            "test": len(inputs.test),
            **{arm: len(rows) for arm, rows in inputs.synthetic.items()},
        },
        "evaluate_config": cfg.evaluate.model_dump(mode="json"),
        "notes": notes,
    }


def headline_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Arms and rows ``[label, value per arm...]`` of the headline metrics (numbers only, no text), for the CLI."""
    arms = [a for a in (*SYNTHETIC_ARMS, "real") if any(m["arm"] == a for m in doc["metrics"])]
    values = {(m["name"], m["arm"]): m["value"] for m in doc["metrics"]}
    code = (doc.get("run") or {}).get("label", "rating")
    rows = []
    for name_t, label_t in HEADLINE:
        if "{label}" in name_t and not code:
            continue
        name, label = name_t.format(label=code), label_t.format(label=code)
        cells = [values.get((name, arm), "absent") for arm in arms]
        if all(c == "absent" for c in cells):
            continue
        rows.append([label, *("-" if c == "absent" else "n/a" if c is None else f"{c:.3g}" for c in cells)])
    return arms, rows
