"""The Gaussian histogram: sensitivity 1 per privacy unit, noise of the right scale, valid post-processing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.privacy.mechanisms import (
    HistogramRelease,
    bounded_contributions,
    exact_histogram,
    gaussian_histogram,
    noise_rng,
)

CELLS = [(r,) for r in range(1, 6)]


def scaled_sum(unit_cells, cells=CELLS):
    return bounded_contributions(unit_cells, cells).sum(axis=0)


@settings(max_examples=40, deadline=None)
@given(
    others=st.lists(st.lists(st.sampled_from(CELLS), max_size=6), max_size=8),
    heavy=st.lists(st.sampled_from(CELLS), min_size=1, max_size=200),
)
def test_one_unit_moves_the_exact_vector_by_at_most_one(others, heavy):
    # Add/remove neighbours: the data set with and without one unit that may have many records.
    without = scaled_sum(others)
    with_unit = scaled_sum([*others, heavy])
    assert np.linalg.norm(with_unit - without) <= 1.0 + 1e-12


def test_a_unit_with_many_records_in_one_cell_counts_as_one():
    vec = scaled_sum([[(5,)] * 50, [(1,)]])
    np.testing.assert_allclose(vec, [1, 0, 0, 0, 1])


def test_empirical_noise_std_matches_sigma():
    units = [[(1,)], [(2,), (3,)], [(5,)] * 4]
    exact = scaled_sum(units)
    rng = noise_rng(1234)
    sigma = 2.5
    draws = np.array([gaussian_histogram(units, CELLS, sigma, rng).noisy_counts for _ in range(4000)]) - exact
    # every cell, empty ones included, gets N(0, sigma^2): mean ~ 0 and std ~ sigma (4000 draws: se ~ 1.1 %)
    np.testing.assert_allclose(draws.std(axis=0), sigma, rtol=0.05)
    np.testing.assert_allclose(draws.mean(axis=0), 0.0, atol=5 * sigma / np.sqrt(4000))


def test_probabilities_are_a_distribution_and_sample_stays_in_domain():
    rel = gaussian_histogram([[(1,)], [(1,)], [(4,)]], CELLS, 0.8, noise_rng(0))
    p = np.array(rel.probabilities)
    assert np.all(p >= 0) and p.sum() == pytest.approx(1.0)
    draws = rel.sample(500, noise_rng(1))
    assert len(draws) == 500 and set(draws) <= set(CELLS)


def test_probabilities_clip_negatives_and_fall_back_to_uniform():
    rel = HistogramRelease(CELLS, (-3.0, 1.0, 3.0, -0.5, 0.0), sigma=1.0)
    assert rel.probabilities == (0.0, 0.25, 0.75, 0.0, 0.0)
    all_negative = HistogramRelease(CELLS, (-1.0, -2.0, -0.1, -4.0, 0.0), sigma=1.0)
    assert all_negative.probabilities == (0.2,) * 5


def test_out_of_domain_cell_is_rejected():
    with pytest.raises(ValueError, match="outside the declared domain"):
        gaussian_histogram([[(1,)], [(6,)]], CELLS, 1.0, noise_rng(0))
    with pytest.raises(ValueError, match="outside the declared domain"):
        exact_histogram([[(0,)]], CELLS)
    with pytest.raises(ValueError, match="twice"):
        gaussian_histogram([[(1,)]], [(1,), (1,)], 1.0, noise_rng(0))


def test_seed_none_draws_fresh_noise_each_time():
    a = gaussian_histogram([[(1,)]], CELLS, 1.0, noise_rng(None))
    b = gaussian_histogram([[(1,)]], CELLS, 1.0, noise_rng(None))
    assert a.noisy_counts != b.noisy_counts
    # while a fixed seed is reproducible
    c = gaussian_histogram([[(1,)]], CELLS, 1.0, noise_rng(7))
    d = gaussian_histogram([[(1,)]], CELLS, 1.0, noise_rng(7))
    assert c == d


def test_json_round_trip_with_multi_code_cells():
    cells = [("Books", 1), ("Books", 5), ("Toys", 1), ("Toys", 5)]
    rel = gaussian_histogram([[("Toys", 5), ("Books", 1)], [("Toys", 5)]], cells, 1.5, noise_rng(3))
    back = HistogramRelease.from_json(rel.to_json())
    assert back == rel and back.cells[0] == ("Books", 1)
    assert rel.to_json()["probabilities"] == list(rel.probabilities)


def test_exact_histogram_counts_records_without_noise():
    rel = exact_histogram([[(5,)] * 3, [(1,), (5,)]], CELLS)
    assert rel.noisy_counts == (1.0, 0.0, 0.0, 0.0, 4.0)
    assert rel.sigma == 0.0 and not rel.is_private
    with pytest.raises(ValueError, match="positive sigma"):
        gaussian_histogram([[(1,)]], CELLS, 0.0, noise_rng(0))


def test_threshold_keeps_noise_on_empty_cells_from_flooding_a_sparse_domain():
    """120 cells (5 ratings x 24 categories), 240 units in 5 cells, sigma 10: without the threshold the empty cells
    would carry about two thirds of the mass; with it, a small share, and real cells (48 units each, 2 sigma above
    the 2.4 sigma threshold) almost always keep theirs."""
    from itertools import product

    from dpsynth.privacy.mechanisms import HistogramRelease, gaussian_histogram

    cells = list(product(range(1, 6), range(24)))
    unit_cells = [[(r, 0)] for r in range(1, 6) for _ in range(48)]
    empty_share, clipped_share, kept = [], [], []
    for seed in range(20):
        rel = gaussian_histogram(unit_cells, cells, 10.0, np.random.default_rng(seed))
        probs = np.asarray(rel.probabilities)
        real = np.array([c[1] == 0 for c in rel.cells])
        empty_share.append(probs[~real].sum())
        kept.extend((probs[real] > 0).tolist())
        clipped = np.clip(np.asarray(rel.noisy_counts), 0, None)
        clipped_share.append(clipped[~real].sum() / clipped.sum())
    assert np.mean(clipped_share) > 0.5
    assert np.mean(empty_share) < 0.1
    assert np.mean(kept) >= 0.95
    small = HistogramRelease(tuple((r,) for r in range(1, 6)), (3.0, 40.0, 40.0, 40.0, 40.0), 10.0)
    assert small.threshold < 10.0  # a 5-cell domain: Phi^-1(0.8) sigma ~ 0.84 sigma
    assert HistogramRelease(((1,), (2,)), (0.0, 5.0), 0.0).threshold == 0.0  # the exact histogram is untouched
