"""Private Evolution's privacy core: one vote per unit (sensitivity 1), calibration against the exact Gaussian
composition, the noise, and selection as post-processing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from dpsynth.config import load_config
from dpsynth.pe.privacy import make_pe_plan, nearest_votes, noisy_histogram, population_size, select
from dpsynth.privacy.accounting import PE_HISTOGRAM, epsilon


def exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """The exact epsilon of one Gaussian mechanism with sensitivity 1 (Balle and Wang 2018, Theorem 8)."""

    def delta_of(eps: float) -> float:
        return norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma) - delta

    return float(brentq(delta_of, 0.0, 500.0, xtol=1e-12))


def composed_sigma(sigma: float, iterations: int, hist_sigma: float) -> float:
    """Gaussian mechanisms compose exactly into one Gaussian: mu^2 adds up (Dong, Roth and Su 2019, GDP)."""
    return 1.0 / math.sqrt(iterations / sigma**2 + 1.0 / hist_sigma**2)


def _random_instance(seed: int):
    rng = np.random.default_rng(seed)
    cells = ["a", "b", "c", "d"]  # "d" has no candidate: units there cast no vote
    cand_cells = [cells[i % 3] for i in range(30)]
    cand = rng.normal(size=(30, 8)).astype(np.float32)
    unit_vectors, unit_cells = [], []
    for _ in range(40):
        k = int(rng.integers(1, 4))  # users with 1-3 records, in different cells
        unit_vectors.append(rng.normal(size=(k, 8)).astype(np.float32))
        unit_cells.append([cells[int(rng.integers(4))] for _ in range(k)])
    return unit_vectors, unit_cells, cand, cand_cells


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_unit_changes_one_vote_by_at_most_one(seed):
    unit_vectors, unit_cells, cand, cand_cells = _random_instance(seed)
    full = nearest_votes(unit_vectors, unit_cells, cand, cand_cells)
    assert full.sum() == sum(any(c != "d" for c in cells) for cells in unit_cells)  # one vote per unit that can
    for u in range(len(unit_vectors)):
        rest = nearest_votes(
            unit_vectors[:u] + unit_vectors[u + 1 :], unit_cells[:u] + unit_cells[u + 1 :], cand, cand_cells
        )
        diff = full - rest
        assert np.linalg.norm(diff) <= 1.0 + 1e-12  # neighbouring data sets: L2 distance of the histograms <= 1
        assert set(np.unique(diff)) <= {0.0, 1.0}
        votes_cast = any(c != "d" for c in unit_cells[u])
        assert diff.sum() == (1.0 if votes_cast else 0.0)


def test_a_user_votes_once_for_the_nearest_candidate_within_its_own_cells():
    cand = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
    cand_cells = ["a", "b", "b"]
    # record 1 (cell b) equals candidate 0 (cell a), which it may not vote for; record 2 (cell a) is far from it
    unit = np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    votes = nearest_votes([unit], [["b", "a"]], cand, cand_cells)
    assert votes.tolist() == [0.0, 0.0, 1.0]  # nearest over both records within their cells: candidate 2, once


def test_noise_has_the_planned_standard_deviation_and_is_fresh():
    votes = np.zeros(20000)
    a = noisy_histogram(votes, 3.0, np.random.default_rng(1))
    b = noisy_histogram(votes, 3.0, np.random.default_rng(2))
    assert a.std() == pytest.approx(3.0, rel=0.03) and abs(a.mean()) < 0.1
    assert not np.allclose(a, b)
    with pytest.raises(ValueError):
        noisy_histogram(votes, 0.0, np.random.default_rng(0))


def test_selection_keeps_each_cells_quota_by_noisy_counts():
    noisy = np.array([5.0, -1.0, 2.0, 9.0, 0.5, 3.0])
    cells = ["a", "a", "a", "b", "b", "b"]
    rng = np.random.default_rng(0)
    assert select(noisy, cells, {"a": 2, "b": 1}, cutoff=0.0, mode="rank", rng=rng) == [0, 2, 3]
    drawn = select(noisy, cells, {"a": 200}, cutoff=1.0, mode="sample", rng=rng)
    assert set(drawn) == {0, 2}  # only counts above the cutoff are drawn
    assert drawn.count(0) > drawn.count(2)


@pytest.mark.parametrize("target,iterations", [(1.0, 1), (1.0, 3), (4.0, 2), (4.0, 5)])
def test_calibrated_sigma_matches_the_exact_gaussian_composition(target, iterations):
    cfg = load_config(None, [f"privacy.target_epsilon={target}", f"pe.iterations={iterations}", "privacy.delta=1e-5"])
    plan = make_pe_plan(cfg, n=5000, histogram_cells=15)
    # the accountant's composition of all mechanisms is at most the target
    assert plan.epsilon() <= target
    # independently: T Gaussians of sigma and the code histogram compose into one Gaussian (exactly)
    exact = exact_gaussian_epsilon(composed_sigma(plan.noise_multiplier, iterations, plan.histogram_sigma), 1e-5)
    assert exact <= target
    # and the calibration is tight: the exact smallest sigma is at most 3% below it (PRV adds up to 0.01 to epsilon)
    best = brentq(
        lambda s: exact_gaussian_epsilon(composed_sigma(s, iterations, plan.histogram_sigma), 1e-5) - target, 0.5, 1e3
    )
    assert best <= plan.noise_multiplier <= best * 1.03
    (pe,) = [m for m in plan.mechanisms() if m.name == PE_HISTOGRAM]
    assert (pe.noise_multiplier, pe.sample_rate, pe.steps) == (plan.noise_multiplier, 1.0, iterations)
    assert pe.params["sensitivity"] == 1.0 and pe.params["votes_per_unit"] == 1


def test_more_iterations_need_more_noise_and_rdp_is_never_below_exact():
    sigmas = []
    for t in (1, 2, 4):
        cfg = load_config(None, ["privacy.target_epsilon=2", f"pe.iterations={t}", "privacy.accountant=rdp"])
        plan = make_pe_plan(cfg, n=1000, histogram_cells=10)
        sigmas.append(plan.noise_multiplier)
        assert exact_gaussian_epsilon(composed_sigma(plan.noise_multiplier, t, plan.histogram_sigma), plan.delta) <= 2
    assert sigmas[0] < sigmas[1] < sigmas[2]
    # sqrt(T) scaling of the Gaussian composition, up to the fixed code release and the RDP slack
    assert sigmas[2] / sigmas[0] == pytest.approx(2.0, rel=0.15)


def test_an_explicit_noise_multiplier_is_used_and_its_epsilon_reported():
    cfg = load_config(None, ["privacy.noise_multiplier=5", "pe.iterations=3", "generate.num_records=10"])
    plan = make_pe_plan(cfg, n=200, histogram_cells=10)
    assert plan.noise_multiplier == 5.0 and plan.target_epsilon is None
    assert plan.epsilon() == pytest.approx(epsilon(plan.mechanisms(), plan.delta, "prv"))
    assert plan.population == population_size(cfg) == 10 * (1 + cfg.pe.variations)
