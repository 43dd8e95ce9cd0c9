from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.evaluate.mia import attack_metrics, loss_attack, reference_attack, roc_auc, tpr_at_fpr


def test_perfectly_separated_scores():
    members, nonmembers = np.linspace(10, 11, 200), np.linspace(0, 1, 300)
    assert roc_auc(members, nonmembers) == 1.0
    assert tpr_at_fpr(members, nonmembers, fpr=0.01) == 1.0
    out = attack_metrics(members, nonmembers)
    assert out["tpr_at_fpr"] == {"0.01": 1.0, "0.001": 1.0}
    assert out["fpr_resolution"] == pytest.approx(1 / 300)


def test_random_scores_are_chance():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(size=5000), rng.normal(size=5000)
    assert roc_auc(members, nonmembers) == pytest.approx(0.5, abs=0.02)
    assert tpr_at_fpr(members, nonmembers, 0.01) == pytest.approx(0.01, abs=0.006)
    assert tpr_at_fpr(members, nonmembers, 0.1) == pytest.approx(0.1, abs=0.02)


def test_tpr_at_fpr_is_conservative():
    # one non-member outscores every member: at FPR 0 nothing can be flagged, at FPR 1/2 everything
    assert tpr_at_fpr([2, 3], [4, 1], fpr=0.0) == 0.0
    assert tpr_at_fpr([2, 3], [4, 1], fpr=0.5) == 1.0


def test_loss_and_reference_attacks():
    rng = np.random.default_rng(1)
    # members have lower loss
    assert loss_attack(rng.uniform(0, 1, 100), rng.uniform(2, 3, 100))["auc"] == 1.0
    # per-record difficulty hides membership from raw losses; the reference model removes it
    difficulty_m, difficulty_n = rng.uniform(1, 5, 300), rng.uniform(1, 5, 300)
    member_target, nonmember_target = difficulty_m - 0.2, difficulty_n
    raw = loss_attack(member_target, nonmember_target)
    calibrated = reference_attack(member_target, difficulty_m, nonmember_target, difficulty_n)
    assert raw["auc"] < 0.6
    assert calibrated["auc"] == 1.0 and calibrated["tpr_at_fpr"]["0.01"] == 1.0
    with pytest.raises(ValueError, match="paired"):
        reference_attack([1, 2], [1], [1], [1])


def test_bad_inputs():
    with pytest.raises(ValueError):
        roc_auc([], [1.0])
    with pytest.raises(ValueError):
        roc_auc([float("nan")], [1.0])


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=30),
    st.lists(st.integers(-5, 5), min_size=1, max_size=30),
)
def test_auc_symmetry_and_tpr_monotone(members, nonmembers):
    assert roc_auc(members, nonmembers) + roc_auc(nonmembers, members) == pytest.approx(1.0)
    tprs = [tpr_at_fpr(members, nonmembers, f) for f in (0.0, 0.01, 0.1, 0.5, 1.0)]
    assert tprs == sorted(tprs) and tprs[-1] == 1.0
