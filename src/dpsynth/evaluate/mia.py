"""Membership inference from scores: AUC and TPR at a low FPR, for a loss attack and a reference-calibrated attack.

An attack gives every candidate record a score, higher meaning "more likely a training member". Its strength is
summarised, as is now standard (Carlini et al., "Membership Inference Attacks From First Principles", 2022), by the ROC
AUC and by the true-positive rate at a low false-positive rate, which captures confident attacks on a few records that
an average-case AUC hides. A DP model bounds both: at (epsilon, delta), TPR <= e^epsilon * FPR + delta.

* **loss attack** (Yeom et al. 2018): score = ``-loss`` of the target model on the record.
* **reference attack** (calibrated, as in LiRA's offline variant / Watson et al. 2022): score =
  ``ref_loss - target_loss``, where the reference model was not trained on the record (e.g. the base model before
  fine-tuning); it removes the per-record difficulty that makes raw losses noisy.

``tpr_at_fpr`` is conservative: the highest TPR among thresholds whose empirical FPR is at most the target, with no
interpolation; with ``m`` non-members the smallest non-zero FPR is ``1/m`` (reported as ``fpr_resolution``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from dpsynth.evaluate.describe import MetricInfo

DESCRIPTIONS: dict[str, MetricInfo] = {
    "mia_auc": MetricInfo("ROC AUC of a membership-inference attack (0.5: no better than guessing)", "lower"),
    "mia_tpr_at_fpr": MetricInfo(
        "true-positive rate of the attack at the threshold whose false-positive rate is at most the target", "lower"
    ),
}

ArrayLike = Sequence[float] | np.ndarray


def _labels_scores(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(member_scores, dtype=float).ravel()
    n = np.asarray(nonmember_scores, dtype=float).ravel()
    if m.size == 0 or n.size == 0:
        raise ValueError("need at least one member and one non-member score")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(n))):
        raise ValueError("scores must be finite")
    return np.concatenate([np.ones(m.size), np.zeros(n.size)]), np.concatenate([m, n])


def roc_auc(member_scores: ArrayLike, nonmember_scores: ArrayLike) -> float:
    """ROC AUC of scores where higher means member (ties count one half).

    >>> roc_auc([3, 4], [1, 2]), roc_auc([1, 2], [3, 4]), roc_auc([1, 1], [1, 1])
    (1.0, 0.0, 0.5)
    """
    y, s = _labels_scores(member_scores, nonmember_scores)
    return float(roc_auc_score(y, s))


def tpr_at_fpr(member_scores: ArrayLike, nonmember_scores: ArrayLike, fpr: float = 0.01) -> float:
    """The highest TPR among thresholds with empirical FPR <= ``fpr``.

    >>> tpr_at_fpr([3, 4], [1, 2], fpr=0.01), tpr_at_fpr([1, 4], [2, 3], fpr=0.0)
    (1.0, 0.5)
    """
    if not 0 <= fpr <= 1:
        raise ValueError("fpr must be in [0, 1]")
    y, s = _labels_scores(member_scores, nonmember_scores)
    fprs, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    ok = fprs <= fpr + 1e-12
    return float(tprs[ok].max()) if ok.any() else 0.0


def attack_metrics(
    member_scores: ArrayLike, nonmember_scores: ArrayLike, fprs: Sequence[float] = (0.01, 0.001)
) -> dict[str, float | int | dict[str, float]]:
    """``{"auc", "tpr_at_fpr": {"0.01": ...}, "n_members", "n_nonmembers", "fpr_resolution"}``."""
    n_non = int(np.asarray(nonmember_scores).size)
    return {
        "auc": roc_auc(member_scores, nonmember_scores),
        "tpr_at_fpr": {f"{f:g}": tpr_at_fpr(member_scores, nonmember_scores, f) for f in fprs},
        "n_members": int(np.asarray(member_scores).size),
        "n_nonmembers": n_non,
        "fpr_resolution": 1.0 / n_non if n_non else 1.0,
    }


def loss_attack(
    member_losses: ArrayLike, nonmember_losses: ArrayLike, fprs: Sequence[float] = (0.01, 0.001)
) -> dict[str, float | int | dict[str, float]]:
    """Loss attack: score = ``-loss`` (members are expected to have lower loss)."""
    return attack_metrics(-np.asarray(member_losses, dtype=float), -np.asarray(nonmember_losses, dtype=float), fprs)


def reference_attack(
    member_target_losses: ArrayLike,
    member_reference_losses: ArrayLike,
    nonmember_target_losses: ArrayLike,
    nonmember_reference_losses: ArrayLike,
    fprs: Sequence[float] = (0.01, 0.001),
) -> dict[str, float | int | dict[str, float]]:
    """Reference-calibrated attack: score = ``reference_loss - target_loss``, per record."""
    mt, mr = np.asarray(member_target_losses, dtype=float), np.asarray(member_reference_losses, dtype=float)
    nt, nr = np.asarray(nonmember_target_losses, dtype=float), np.asarray(nonmember_reference_losses, dtype=float)
    if mt.shape != mr.shape or nt.shape != nr.shape:
        raise ValueError("target and reference losses must be paired per record")
    return attack_metrics(mr - mt, nr - nt, fprs)
