"""The one-run audit (Steinke, Nasr and Jagielski 2023) and the jax_privacy epsilon_one_shot variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from dpsynth.privacy.audit import (
    epsilon_from_guesses,
    epsilon_lower_bound,
    epsilon_lower_bound_from_canaries,
    one_run_audit,
    p_value,
)


def naive_p_value(m, r, v, eps, delta):
    """Algorithm 2 of the paper, literally: a loop over i keeping the largest running mean."""
    q = 1 / (1 + math.exp(-eps))
    beta = scipy.stats.binom.sf(v - 1, r, q)
    alpha, running = 0.0, 0.0
    for i in range(1, v + 1):
        running += scipy.stats.binom.pmf(v - i, r, q)
        alpha = max(alpha, running / i)
    return min(beta + alpha * delta * 2 * m, 1.0)


def normal_scores(n: int) -> np.ndarray:
    """Scores deterministically distributed like N(0, 1): the quantiles at the midpoints of n equal bins."""
    return scipy.stats.norm.ppf(np.linspace(0, 1, n, endpoint=False) + 1 / (2 * n))


@pytest.mark.parametrize(("shift", "expected"), [(0, 0.0), (1, 1.13346), (2, 2.311945), (4, 4.395568)])
def test_epsilon_one_shot_anchor_from_jax_privacy(shift, expected):
    # jax_privacy/auditing/canary_score_auditor_test.py::test_epsilon_one_shot_close
    out_scores = normal_scores(10_000)
    bound = epsilon_lower_bound(out_scores + shift, out_scores, delta=1e-6, significance=0.05)
    np.testing.assert_allclose(bound.epsilon, expected, rtol=1e-5)
    assert bound.num_canaries == 20_000


@pytest.mark.parametrize(
    ("m", "r", "v", "eps", "delta"),
    [(10, 10, 10, 0.0, 0.1), (100, 50, 40, 0.5, 1e-3), (1000, 100, 99, 1.0, 1e-6), (1000, 100, 90, 2.0, 0.0)],
)
def test_p_value_matches_the_papers_loop(m, r, v, eps, delta):
    assert p_value(m, r, v, eps, delta) == pytest.approx(naive_p_value(m, r, v, eps, delta), rel=1e-10, abs=1e-15)


def test_bound_is_where_the_p_value_crosses_the_significance_level():
    m, r, v, delta, level = 1000, 500, 400, 1e-5, 0.05
    eps = epsilon_from_guesses(m, r, v, delta=delta, significance=level)
    assert p_value(m, r, v, eps - 1e-6, delta) < level <= p_value(m, r, v, eps + 1e-6, delta)


def test_perfectly_separated_scores_give_a_large_bound():
    rng = np.random.default_rng(0)
    included = rng.random(1000) < 0.5
    scores = np.where(included, 10.0, 0.0) + rng.normal(0, 0.01, 1000)
    paper = one_run_audit(scores, included, k_plus=200, k_minus=200, delta=1e-6)
    assert paper.num_correct == paper.num_guesses == 400
    assert paper.epsilon > 4.0
    searched = epsilon_lower_bound_from_canaries(scores, included, delta=1e-6)
    assert searched.epsilon > 4.0


def test_identical_distributions_give_about_zero():
    rng = np.random.default_rng(1)
    included = rng.random(2000) < 0.5
    scores = rng.normal(0, 1, 2000)  # the attack learns nothing
    assert one_run_audit(scores, included, k_plus=100, k_minus=100, delta=1e-6).epsilon < 0.3
    assert epsilon_lower_bound_from_canaries(scores, included, delta=1e-6).epsilon < 0.3


def test_one_run_audit_counts_in_and_out_guesses():
    scores = [5, 4, 3, 2, 1, 0]
    included = [True, False, True, False, True, False]
    bound = one_run_audit(scores, included, k_plus=2, k_minus=2, delta=0.0)
    # top two: 5 (in, right), 4 (out, wrong); bottom two: 1 (in, wrong), 0 (out, right)
    assert (bound.num_guesses, bound.num_correct) == (4, 2)
    assert bound.epsilon == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="k_plus"):
        one_run_audit([1.0, 2.0], [True, False], k_plus=2, k_minus=1, delta=1e-6)
    with pytest.raises(ValueError, match="same length"):
        one_run_audit([1.0, 2.0], [True], k_plus=1, delta=1e-6)
    with pytest.raises(ValueError, match="significance"):
        epsilon_lower_bound([1.0], [0.0], delta=1e-6, significance=0.0)
    with pytest.raises(ValueError, match="at least one"):
        epsilon_lower_bound([], [0.0], delta=1e-6)
