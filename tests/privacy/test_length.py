"""The DP length bound (data.max_tokens=auto): the cells, the choice rule, the noise and the sensitivity."""

from __future__ import annotations

import numpy as np
import pytest

from dpsynth.privacy.accounting import epsilon, histogram_mechanism
from dpsynth.privacy.length import LengthRelease, choose_bound, length_cell, length_mechanism, release_length
from dpsynth.privacy.mechanisms import bounded_contributions, noise_rng

GRID = (32, 64, 128, 256)


def test_cells_follow_the_grid_and_one_beyond_it():
    assert [length_cell(n, GRID) for n in (1, 32, 33, 64, 65, 256, 257, 10_000)] == [
        (0,),
        (0,),
        (1,),
        (1,),
        (2,),
        (3,),
        (4,),
        (4,),
    ]


def test_the_bound_is_the_smallest_grid_value_reaching_the_quantile():
    assert choose_bound([10, 30, 60, 0, 0], GRID, 0.5) == 128  # 10% then 40% then 100%
    assert choose_bound([10, 30, 60, 0, 0], GRID, 0.4) == 64
    assert choose_bound([0, 0, 0, 1, 99], GRID, 0.5) == 256  # most beyond the grid: its largest value
    assert choose_bound([-5.0, -1.0, 0.0, 0.0, 0.0], GRID, 0.5) is None  # nothing positive: no basis
    # negative noise is clipped before the shares: -50 in the first cell must not push the median up
    assert choose_bound([-50, 60, 40, 0, 0], GRID, 0.5) == 64


def test_exact_release_counts_one_record_units_once():
    units = [[10], [40], [50], [100], [300]]
    rel = release_length(units, grid=GRID, quantile=0.5, sigma=None)
    assert rel.histogram.sigma == 0 and rel.mechanism() is None  # exact: no DP release, nothing for the accountant
    assert list(rel.histogram.noisy_counts) == [1.0, 2.0, 1.0, 0.0, 1.0]
    assert rel.max_tokens == 64


@pytest.mark.parametrize("sigma", [None, 1e-9])
def test_exact_and_dp_weigh_a_units_records_alike(sigma):
    """A unit's records share its weight of L2 norm 1 in both modes, so the exact bound (a non-DP row) and the DP
    bound estimate the same median: five records in one cell count 1, two in two cells 1/sqrt(2) each."""
    rel = release_length([[40] * 5, [10, 100]], grid=GRID, sigma=sigma, rng=noise_rng(0))
    half = 2**-0.5
    assert rel.histogram.noisy_counts == pytest.approx([half, 1.0, half, 0.0, 0.0], abs=1e-6)


def test_noise_differs_across_draws_and_is_at_the_stated_sigma():
    units = [[100]] * 1000
    draws = [release_length(units, grid=GRID, sigma=20.0, rng=noise_rng(s)) for s in range(200)]
    counts = np.array([d.histogram.noisy_counts for d in draws])
    assert len({tuple(c) for c in counts}) == 200
    # cell 2 holds the 1000 units; the spread around them is the noise, sigma 20 (within sampling error)
    assert counts[:, 2].mean() == pytest.approx(1000, abs=5)
    assert counts.std(axis=0) == pytest.approx([20.0] * 5, rel=0.15)
    unseeded = [release_length(units, grid=GRID, sigma=20.0, rng=noise_rng(None)).histogram.noisy_counts for _ in "ab"]
    assert unseeded[0] != unseeded[1]  # no noise_seed: fresh noise every run


def test_a_unit_moves_the_histogram_by_at_most_one_in_l2_whatever_its_records():
    """The sensitivity the accountant assumes: a unit with several responses, in one cell or spread over several,
    changes the exact histogram by a vector of L2 norm at most 1."""
    cells = [(i,) for i in range(len(GRID) + 1)]
    for unit in ([40], [40, 40, 40], [10, 100, 300], [500] * 7):
        vec = bounded_contributions([[length_cell(n, GRID) for n in unit]], cells).sum(axis=0)
        assert np.linalg.norm(vec) <= 1.0 + 1e-12


def test_the_mechanism_is_a_full_data_gaussian_histogram():
    mech = length_mechanism(7.0, GRID)
    assert mech.name == "length_histogram" and mech.params["grid"] == list(GRID)
    assert (mech.noise_multiplier, mech.sample_rate, mech.steps) == (7.0, 1.0, 1)
    # the same privacy as any sensitivity-1 Gaussian histogram at that sigma
    assert epsilon([mech], 1e-5, "rdp") == pytest.approx(epsilon([histogram_mechanism(7.0, 5)], 1e-5, "rdp"))


def test_the_release_round_trips_and_refuses_bad_settings():
    rel = release_length([[20], [90]], grid=GRID, sigma=3.0, rng=noise_rng(1))
    assert LengthRelease.from_json(rel.to_json()) == rel
    with pytest.raises(ValueError, match="increasing"):
        release_length([[20]], grid=(64, 32), sigma=None)
    with pytest.raises(ValueError, match="quantile"):
        release_length([[20]], grid=GRID, quantile=1.0, sigma=None)
    with pytest.raises(ValueError, match="noise generator"):
        release_length([[20]], grid=GRID, sigma=3.0)
    # all noise and nothing positive: the public fallback, not a bound read from nothing
    assert release_length([], grid=GRID, sigma=None, fallback=64).max_tokens == 64
