"""The privacy checks on the released text of each arm: canary leakage, distance to closest record, verbatim overlap.

Thin orchestration of :mod:`dpsynth.evaluate.text_privacy`. The two cheap checks (canary leakage and verbatim n-gram
overlap: regular expressions and set look-ups, no model) read *every* generated record and the whole training and test
splits, because a leak missed by sub-sampling matters more than a consistent sample; distance to closest record needs
embeddings and uses the capped samples (``evaluate.max_records``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpsynth.evaluate.collect import EvalInputs, MetricList
from dpsynth.evaluate.text_privacy import (
    CANARY_COLUMNS,
    canary_leakage,
    canary_shapes,
    distance_to_closest_record,
    verbatim_overlap,
)

_HIT_NAMES = {"Name": "name_hits", "Street": "street_hits", "Phone": "phone_hits", "Canary": "secret_hits"}


def canary_table(inputs: EvalInputs, synthetic_all: dict[str, list[str]], metrics: MetricList) -> dict[str, Any] | None:
    """The canary leakage table (records of each arm containing a canary's name, street, phone or secret) and its
    metrics ``privacy.canary.{name,street,phone,secret}_hits``; None when the run planted no canaries.

    Also ``shape_rows``: records of each arm carrying a field in the canary template's shape with any value
    (``privacy.canary_shape.*_hits``), with the real test split's count as the base rate (``shape_base_rate``)."""
    if not inputs.canaries:
        return None
    leak = canary_leakage(synthetic_all, [c.to_json() for c in inputs.canaries])
    for arm in synthetic_all:
        for column in CANARY_COLUMNS:
            metrics.add(
                f"privacy.canary.{_HIT_NAMES[column]}",
                "privacy",
                arm,
                leak["records"][arm][column],
                "canary_leakage",
                f"column {column}: records of this arm containing it; value is a count out of "
                f"{leak['n_synthetic'][arm]} records",
                n=leak["n_synthetic"][arm],
                canaries_leaked=leak["canaries"][arm][column],
            )
    shapes = {arm: canary_shapes(texts) for arm, texts in synthetic_all.items()}
    for arm, counts in shapes.items():
        for column in CANARY_COLUMNS:
            metrics.add(
                f"privacy.canary_shape.{_HIT_NAMES[column]}",
                "privacy",
                arm,
                counts[column],
                "canary_shape",
                f"column {column}: a count out of {len(synthetic_all[arm])} records",
                n=len(synthetic_all[arm]),
            )
    test_texts = [r.text for r in inputs.test_all]
    real_shapes = canary_shapes(test_texts)
    return {
        "shape_rows": {arm: [shapes[arm][c] for c in CANARY_COLUMNS] for arm in synthetic_all},
        "shape_base_rate": {"n": len(test_texts), "row": [real_shapes[c] for c in CANARY_COLUMNS]},
        "columns": list(CANARY_COLUMNS),
        "rows": {arm: [leak["records"][arm][c] for c in CANARY_COLUMNS] for arm in synthetic_all},
        "n_canaries": leak["n_canaries"],
        "n_synthetic": leak["n_synthetic"],
        "canaries_leaked": {arm: [leak["canaries"][arm][c] for c in CANARY_COLUMNS] for arm in synthetic_all},
        "definition": "rows: synthetic records containing any canary's field; canaries_leaked: distinct canaries "
        "whose field appears in some record of the arm; shape_rows: records containing a field in the canary "
        "template's shape with any value (shape_base_rate: the same count in the real test split)",
    }


def dcr(
    train_embeddings: np.ndarray,
    test_embeddings: np.ndarray,
    synthetic_embeddings: dict[str, np.ndarray],
    metrics: MetricList,
) -> dict[str, Any]:
    """Distance to the closest training record, per arm and for the test split; returns the ``dcr`` distributions."""
    out: dict[str, Any] = {}
    for arm, emb in synthetic_embeddings.items():
        if len(emb) == 0:
            continue
        d = distance_to_closest_record(train_embeddings, emb, test_embeddings)
        out.setdefault("test", d["test"])
        out[arm] = d["synthetic"]
        extra = {
            "synthetic_median": d["synthetic_median"],
            "test_median": d["test_median"],
            "near_copies": d["near_copies"],
            "n": len(emb),
            "n_real": len(test_embeddings),
        }
        metrics.add("privacy.dcr.median_ratio", "privacy", arm, d["median_ratio"], "dcr_median_ratio", **extra)
        metrics.add(
            "privacy.dcr.share_below_test_p05",
            "privacy",
            arm,
            d["share_below_test_p05"],
            "dcr_share_below_test_p05",
            n=len(emb),
            n_real=len(test_embeddings),
        )
    return out


def verbatim(inputs: EvalInputs, synthetic_all: dict[str, list[str]], n: int, metrics: MetricList) -> dict[str, Any]:
    """Verbatim word ``n``-gram overlap with the whole training split, per arm, against the whole test split's rate."""
    test_texts = [r.text for r in inputs.test_all]
    table: dict[str, Any] = {"n": n, "synthetic_rate": {}, "excess": {}}
    test_rate = None
    for arm, texts in synthetic_all.items():
        v = verbatim_overlap([r.text for r in inputs.train_all], texts, test_texts, n=n)
        test_rate = v["test_rate"]
        table["synthetic_rate"][arm] = v["synthetic_rate"]
        table["excess"][arm] = v["excess"]
        metrics.add(
            "privacy.verbatim.excess", "privacy", arm, v["excess"], "verbatim_excess", f"n = {n} words", n=len(texts)
        )
        metrics.add(
            "privacy.verbatim.rate",
            "privacy",
            arm,
            v["synthetic_rate"],
            "verbatim_excess",
            f"this entry: the share itself for this arm's records, not the difference; n = {n} words",
            n=len(texts),
        )
    if synthetic_all:
        metrics.add(
            "privacy.verbatim.rate",
            "privacy",
            "real",
            test_rate,
            "verbatim_excess",
            f"this entry: the share itself for the real test split's records (the base rate); n = {n} words",
            n=len(test_texts),
        )
    table["test_rate"] = test_rate
    return table
