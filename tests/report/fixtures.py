"""Hand-made metrics.json and privacy.json documents, written against the metrics.json contract (schema_version 1).

The numbers are chosen to be recognisable in the HTML (e.g. epsilon 3.98765 must show as 3.988) and the samples carry
markup that must come out escaped. Distributions are seeded so the report is deterministic.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.rundir import RunDir, write_json

XSS_SAMPLE = 'Great case! <script>alert("pwned")</script> & <b>bold</b> "quoted"'
XSS_CATEGORY = "<img src=x onerror=1> & $5-$10"

MECHANISMS = [
    {
        "name": "dp_sgd",
        "noise_multiplier": 0.8765,
        "sample_rate": 0.0123,
        "steps": 321,
        "params": {"max_grad_norm": 1.0},
    },
    {"name": "gaussian_histogram", "noise_multiplier": 12.5, "sample_rate": 1.0, "steps": 1, "params": {"cells": 10}},
]

LEDGER = {
    "path": "/home/user/.local/share/dpsynth/ledger.sqlite",
    "entry": 7,
    "source": "sha256:ab12cd34",
    "status": "committed",
    "composed_epsilon": 5.4321,
    "composed_delta": 1e-5,
    "releases_of_source": 2,
    "budget": {"epsilon": 10.0, "delta": 1e-5},
}


def privacy_json() -> dict[str, Any]:
    """DIR/dp/privacy.json as the train stage writes it (with a committed ledger entry)."""
    return {
        "dp": True,
        "epsilon": 3.98765,
        "delta": 1e-5,
        "target_epsilon": 4.0,
        "accountant": "prv",
        "noise_multiplier": 0.8765,
        "max_grad_norm": 1.0,
        "sample_rate": 0.0123,
        "expected_batch_size": 8,
        "steps": 321,
        "histogram_sigma": 12.5,
        "privacy_unit": "reviewerID",
        "max_records_per_user": 1,
        "training_units": 650,
        "mechanisms": copy.deepcopy(MECHANISMS),
        "epsilon_by_mechanism": {"dp_sgd": 3.9, "gaussian_histogram": 0.31},
        "ledger": copy.deepcopy(LEDGER),
    }


def _metric(name: str, group: str, arm: str, value: float | None, better: str, definition: str) -> dict[str, Any]:
    return {"name": name, "group": group, "arm": arm, "value": value, "better": better, "definition": definition}


def complete_metrics() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    arms = ("dp", "no_dp")
    m: list[dict[str, Any]] = []
    for arm, hits in zip(arms, ([0, 0, 0, 0], [3, 2, 1, 4]), strict=True):
        for col, h in zip(("name", "street", "phone", "secret"), hits, strict=True):
            definition = f"records containing a canary {col}"
            m.append(_metric(f"privacy.canary.{col}_hits", "privacy", arm, h, "lower", definition))
    m += [
        _metric("privacy.exposure.mean", "privacy", "dp", 1.23456, "lower", "mean canary exposure in bits"),
        _metric("privacy.exposure.mean", "privacy", "no_dp", 8.7654, "lower", "mean canary exposure in bits"),
        _metric("privacy.exposure.max", "privacy", "dp", 3.1, "lower", "largest canary exposure in bits"),
        _metric("privacy.exposure.max", "privacy", "no_dp", 9.97, "lower", "largest canary exposure in bits"),
        _metric("privacy.mia.loss.auc", "privacy", "dp", 0.5012, "lower", "ROC AUC of the loss attack"),
        _metric("privacy.mia.loss.auc", "privacy", "no_dp", 0.6345, "lower", "ROC AUC of the loss attack"),
        _metric("privacy.dcr.median_ratio", "privacy", "dp", 1.02, "higher", "median DCR synthetic / test"),
        _metric("privacy.dcr.median_ratio", "privacy", "no_dp", 0.71, "higher", "median DCR synthetic / test"),
        _metric("privacy.verbatim.excess", "privacy", "dp", -0.004, "lower", "8-gram overlap rate minus test's"),
        _metric("privacy.verbatim.excess", "privacy", "no_dp", 0.052, "lower", "8-gram overlap rate minus test's"),
        _metric("privacy.special.unusual_check", "privacy", "dp", 42.0, "none", "a metric no section knows by name"),
        _metric("fidelity.mauve", "fidelity", "dp", 0.81234, "higher", "MAUVE between real and synthetic embeddings"),
        _metric(
            "fidelity.mauve", "fidelity", "no_dp", 0.93456, "higher", "MAUVE between real and synthetic embeddings"
        ),
        _metric("fidelity.length.kl", "fidelity", "dp", 0.1234, "lower", "KL(real || synthetic) of lengths"),
        _metric("fidelity.length.kl", "fidelity", "no_dp", 0.0456, "lower", "KL(real || synthetic) of lengths"),
        _metric("fidelity.length.wasserstein", "fidelity", "dp", 12.3456, "lower", "W1 of lengths in tokens"),
        _metric("fidelity.length.wasserstein", "fidelity", "no_dp", 4.5678, "lower", "W1 of lengths in tokens"),
        _metric("fidelity.rating.kl", "fidelity", "dp", 0.0321, "lower", "KL of the rating code"),
        _metric("fidelity.rating.wasserstein", "fidelity", "dp", 0.2109, "lower", "W1 of the rating code"),
        _metric("fidelity.unigram.kl", "fidelity", "no_dp", None, "lower", "KL of unigram frequencies (not computed)"),
        _metric("fidelity.correlation.frobenius", "fidelity", "dp", 0.3333, "lower", "Frobenius norm of corr. diff"),
        _metric("utility.tfidf.rating.accuracy", "utility", "real", 0.7012, "higher", "TSTR accuracy"),
        _metric("utility.tfidf.rating.accuracy", "utility", "dp", 0.6123, "higher", "TSTR accuracy"),
        _metric("utility.tfidf.feature_importance_spearman", "utility", "dp", 0.4567, "higher", "rank corr."),
        _metric("quality.gibberish.rate", "quality", "dp", 0.05, "lower", "share gibberish"),
        _metric("quality.well_formed.rate", "quality", "dp", 0.6, "higher", "share well formed"),
        _metric("quality.mean_words", "quality", "dp", 37.5, "none", "mean words per record"),
    ]
    utility_rows = []
    for family in ("tfidf", "embedding"):
        for task in ("rating", "category"):
            for source, acc in (("real", 0.7012), ("dp", 0.6123), ("no_dp", 0.6555), ("real_dp", 0.5432)):
                bump = 0.01 if family == "embedding" else 0.0
                utility_rows.append([source, family, task, acc + bump, acc - 0.1])
    domain_cat = ["Cell Phones", "Accessories", XSS_CATEGORY]
    return {
        "schema_version": 1,
        "run": {
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "privacy_unit": "reviewerID",
            "training_units": 650,
            "n_test_records": 200,
            "n_synthetic": {"dp": 300, "no_dp": 300},
            "dp": {k: v for k, v in privacy_json().items() if k not in ("dp",)},
            "canaries": {"count": 10, "rate": 0.015},
        },
        "metrics": m,
        "tables": {
            "canary_leakage": {
                "columns": ["Name", "Street", "Phone", "Canary"],
                "rows": {"dp": [0, 0, 0, 0], "no_dp": [3, 2, 1, 4]},
                "n_canaries": 10,
                "n_synthetic": {"dp": 300, "no_dp": 300},
            },
            "utility": {
                "columns": ["source", "family", "task", "accuracy", "macro_f1"],
                "rows": utility_rows,
                "majority_accuracy": {"rating": 0.4444, "category": 0.3333},
            },
            "quality": {
                "columns": ["arm", "n", "well_formed", "gibberish", "abrupt_ending", "repetitive"],
                "rows": [["real", 200, 170, 2, 25, 3], ["dp", 300, 180, 15, 90, 30], ["no_dp", 300, 250, 3, 40, 10]],
                "definitions": {
                    "well_formed": "none of the other categories",
                    "gibberish": "fewer than 50% letters or more than 30% out-of-dictionary words",
                    "abrupt_ending": "does not end with . ! ? or an ellipsis",
                    "repetitive": "some word 3-gram occurs 3 or more times",
                },
            },
            "mia": {
                "columns": ["arm", "attack", "auc", "tpr_at_1pct_fpr"],
                "rows": [
                    ["dp", "loss", 0.5012, 0.0101],
                    ["no_dp", "loss", 0.6345, 0.0789],
                    ["no_dp", "reference", 0.7, 0.12],
                ],
                "reference_model": "the base model with the public warm start /runs/public/no_dp/adapter",
            },
        },
        "distributions": {
            "length_tokens": {
                "real": rng.gamma(4.0, 12.0, 200).round().tolist(),
                "dp": rng.gamma(3.0, 10.0, 300).round().tolist(),
                "no_dp": rng.gamma(4.0, 11.0, 300).round().tolist(),
            },
            "rating": {
                "domain": [1, 2, 3, 4, 5],
                "real": [0.1, 0.05, 0.1, 0.25, 0.5],
                "dp": [0.05, 0.05, 0.1, 0.3, 0.5],
                "no_dp": [0.1, 0.06, 0.09, 0.25, 0.5],
            },
            "category": {
                "domain": domain_cat,
                "real": [0.5, 0.3, 0.2],
                "dp": [0.6, 0.3, 0.1],
                "no_dp": [0.5, 0.35, 0.15],
            },
            "nearest_real_similarity": {
                "reference": np.clip(rng.normal(0.6, 0.1, 200), -1, 1).tolist(),
                "dp": np.clip(rng.normal(0.55, 0.1, 300), -1, 1).tolist(),
                "no_dp": np.clip(rng.normal(0.65, 0.12, 300), -1, 1).tolist(),
            },
            "dcr": {
                "test": np.clip(rng.normal(0.4, 0.1, 200), 0, 2).tolist(),
                "dp": np.clip(rng.normal(0.42, 0.1, 300), 0, 2).tolist(),
                "no_dp": np.clip(rng.normal(0.3, 0.12, 300), 0, 2).tolist(),
            },
        },
        "samples": {
            "dp": [XSS_SAMPLE, "This phone case fits well and feels sturdy.", "Battery lasts all day"],
            "no_dp": ["Exactly as described. Five stars.", "x" * 3000],
        },
        "timing_s": {"fidelity": 12.34, "utility": 56.78, "privacy": 90.12},
        "audit": {  # the shape of dpsynth.privacy.audit_run.metrics_entry
            "m": 1000,
            "significance": 0.05,
            "delta": 1e-5,
            "dp": {"eps_lb": 0.4321, "epsilon": 3.98765, "correct": 60, "guesses": 100},
            "no_dp": {"eps_lb": 2.5, "epsilon": None, "correct": 95, "guesses": 100},
        },
    }


def partial_metrics() -> dict[str, Any]:
    """A run without canaries, category, no_dp arm, audit, MIA or quality: what a quick DP-only run produces."""
    doc = complete_metrics()
    doc["run"]["canaries"] = None
    doc["run"]["n_synthetic"] = {"dp": 300}
    doc["metrics"] = [
        x
        for x in doc["metrics"]
        if x["arm"] != "no_dp" and not x["name"].startswith(("privacy.canary", "privacy.exposure"))
    ]
    doc["tables"]["canary_leakage"] = None
    doc["tables"]["mia"] = None
    del doc["tables"]["quality"]
    doc["tables"]["utility"]["rows"] = [r for r in doc["tables"]["utility"]["rows"] if r[0] != "no_dp"]
    doc["distributions"]["category"] = None
    for key in ("length_tokens", "nearest_real_similarity", "dcr"):
        doc["distributions"][key].pop("no_dp")
    for key in ("rating",):
        doc["distributions"][key].pop("no_dp")
    doc["samples"] = {"dp": doc["samples"]["dp"]}
    del doc["audit"]
    del doc["timing_s"]
    return doc


def make_run(root: Path, metrics: dict[str, Any] | None, privacy: dict[str, Any] | None) -> RunDir:
    """A run directory holding only what the report reads."""
    run = RunDir(root)
    if metrics is not None:
        write_json(run.metrics_json, metrics)
    if privacy is not None:
        write_json(run.privacy_json("dp"), privacy)
    return run
