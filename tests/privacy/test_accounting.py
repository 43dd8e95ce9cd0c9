"""Accounting: published anchors, calibration that never overshoots, composition, the q = 1 Gaussian."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import norm

from dpsynth.errors import ConfigError
from dpsynth.privacy.accounting import (
    CALIBRATION_RTOL,
    Mechanism,
    calibrate_noise_multiplier,
    default_delta,
    dp_sgd_mechanism,
    epsilon,
    histogram_mechanism,
    histogram_noise_for_epsilon,
)


def sgd(sigma: float, q: float, steps: int) -> Mechanism:
    return dp_sgd_mechanism(sigma, q, steps, max_grad_norm=1.0)


def exact_gaussian_epsilon(sigma: float, delta: float) -> float:
    """The exact epsilon of one Gaussian mechanism with sensitivity 1 (Balle and Wang 2018, Theorem 8)."""

    def delta_of(eps: float) -> float:
        return norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma) - delta

    return float(brentq(delta_of, 0.0, 200.0, xtol=1e-12))


# ---- anchors (Opacus tests)
def test_rdp_anchor_from_opacus_tests():
    # opacus/tests/accountants_test.py::test_rdp_accountant: sigma 1.5, q 0.04, int(90 / 0.04) = 2250 steps, delta 1e-5
    assert epsilon([sgd(1.5, 0.04, 2250)], 1e-5, "rdp") == pytest.approx(7.32911117143, abs=1e-10)


def test_prv_anchor_from_opacus_tests():
    # opacus/tests/accountants_test.py::test_prv_accountant uses steps = int(90 // 0.04), which is 2249 (floor division
    # of 90 by the double 0.04 gives 2249.0), not 2250; the anchor 6.777395712150674 belongs to 2249 steps.
    assert int(90 // 0.04) == 2249
    assert epsilon([sgd(1.5, 0.04, 2249)], 1e-5, "prv") == pytest.approx(6.777395712150674, rel=1e-9)
    # and at 2250 steps, one more step spends slightly more
    assert 6.7774 < epsilon([sgd(1.5, 0.04, 2250)], 1e-5, "prv") < 6.78


def test_calibration_matches_opacus_get_noise_multiplier_anchors():
    # opacus tests: target 8, delta 1e-5, q 0.04, 2000 steps -> rdp 1.3562, prv 1.2915 (Opacus stops at eps tolerance
    # 0.01, we at a relative sigma tolerance of 1e-3, so agreement is to about 3 decimals)
    rdp = calibrate_noise_multiplier(target_epsilon=8, delta=1e-5, sample_rate=0.04, steps=2000, accountant="rdp")
    prv = calibrate_noise_multiplier(target_epsilon=8, delta=1e-5, sample_rate=0.04, steps=2000, accountant="prv")
    assert rdp == pytest.approx(1.3562, abs=2e-3)
    assert prv == pytest.approx(1.2915, abs=2e-3)


# ---- sample rate 1
@pytest.mark.parametrize("sigma", [0.7, 2.0, 10.0])
def test_full_data_gaussian_prv_is_an_upper_bound_close_to_exact(sigma):
    delta = 1e-5
    exact = exact_gaussian_epsilon(sigma, delta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # q = 1 must not leak numpy's divide-by-zero warning
        prv = epsilon([histogram_mechanism(sigma, 5)], delta, "prv")
    assert exact <= prv <= exact + 0.011  # Opacus's PRV returns estimate + eps_error (0.01)
    rdp = epsilon([histogram_mechanism(sigma, 5)], delta, "rdp")
    assert rdp >= exact  # RDP is a valid, looser bound


def test_histogram_noise_for_epsilon_spends_at_most_its_share():
    for accountant in ("prv", "rdp"):
        for eps in (0.05, 0.4, 2.0):
            sigma = histogram_noise_for_epsilon(eps, 1e-5, accountant)
            spent = epsilon([histogram_mechanism(sigma, 7)], 1e-5, accountant)
            assert spent <= eps
            assert spent >= eps * 0.98
            # a little less noise would overspend: the sigma is (nearly) the smallest
            assert epsilon([histogram_mechanism(sigma * (1 - 2 * CALIBRATION_RTOL), 7)], 1e-5, accountant) > eps


# ---- composition
@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_composition_is_more_than_either_and_less_than_the_sum(accountant):
    hist = histogram_mechanism(5.0, 10)
    train = sgd(1.0, 0.02, 300)
    e_h = epsilon([hist], 1e-5, accountant)
    e_t = epsilon([train], 1e-5, accountant)
    e_both = epsilon([hist, train], 1e-5, accountant)
    assert max(e_h, e_t) < e_both < e_h + e_t
    assert epsilon([train, hist], 1e-5, accountant) == pytest.approx(e_both, rel=1e-9)  # order does not matter


def test_no_mechanism_or_zero_steps_spends_nothing():
    assert epsilon([], 1e-5, "prv") == 0.0
    assert epsilon([sgd(1.0, 0.1, 0)], 1e-5, "rdp") == 0.0


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="accountant"):
        epsilon([sgd(1.0, 0.1, 10)], 1e-5, "gdp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="delta"):
        epsilon([sgd(1.0, 0.1, 10)], 0.0, "rdp")
    with pytest.raises(ValueError, match="sample rate"):
        sgd(1.0, 1.5, 10)
    with pytest.raises(ValueError, match="noise multiplier"):
        sgd(0.0, 0.1, 10)


def test_mechanism_json_round_trip_and_params_are_plain_json():
    m = histogram_mechanism(3.5, 12)
    assert Mechanism.from_json(m.to_json()) == m
    assert m.to_json()["params"] == {"sensitivity": 1.0, "cells": 12}
    with pytest.raises(ValueError, match="JSON"):
        Mechanism("x", 1.0, 0.5, 1, {"bad": object()})


def test_default_delta_is_below_one_over_n():
    for n in (1, 10, 999, 10**5, 10**8):
        assert default_delta(n) < 1 / n
        assert default_delta(n) <= 1e-5
    with pytest.raises(ConfigError):
        default_delta(0)


# ---- calibration
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.floats(1.0, 10.0),
    sample_rate=st.sampled_from([1e-4, 1e-3, 1e-2, 0.05, 0.1]),
    steps=st.integers(10, 100),
    delta=st.sampled_from([1e-6, 1e-5, 1e-4]),
    accountant=st.sampled_from(["prv", "rdp"]),
    with_histogram=st.booleans(),
)
def test_calibration_never_overshoots_and_is_tight(target, sample_rate, steps, delta, accountant, with_histogram):
    fixed = []
    if with_histogram:
        fixed = [histogram_mechanism(histogram_noise_for_epsilon(0.05 * target, delta, accountant), 5)]
    sigma = calibrate_noise_multiplier(
        target_epsilon=target, delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant, fixed=fixed
    )
    spent = epsilon([*fixed, sgd(sigma, sample_rate, steps)], delta, accountant)
    assert spent <= target  # never over
    assert spent >= 0.97 * target  # and tight
    less_noise = epsilon([*fixed, sgd(sigma * (1 - 2 * CALIBRATION_RTOL), sample_rate, steps)], delta, accountant)
    assert less_noise > target  # (nearly) the smallest sigma that fits


def test_fixed_mechanisms_that_already_exceed_the_target_are_refused():
    loud = histogram_mechanism(0.5, 5)  # epsilon about 10 on its own
    with pytest.raises(ConfigError, match="alone spend"):
        calibrate_noise_multiplier(
            target_epsilon=2.0, delta=1e-5, sample_rate=0.01, steps=100, accountant="rdp", fixed=[loud]
        )


def test_unreachable_target_is_a_config_error():
    # RDP (even with our large orders) cannot certify epsilon 1e-4 at delta 1e-6, whatever the noise
    with pytest.raises(ConfigError, match="unreachable"):
        calibrate_noise_multiplier(target_epsilon=1e-4, delta=1e-6, sample_rate=0.01, steps=100, accountant="rdp")
    # nor PRV below its discretisation error of 0.01
    with pytest.raises(ConfigError, match="unreachable"):
        histogram_noise_for_epsilon(0.005, 1e-5, "prv")


def test_calibrated_sigma_is_monotone_in_target():
    sigmas = [
        calibrate_noise_multiplier(target_epsilon=t, delta=1e-5, sample_rate=0.01, steps=100, accountant="prv")
        for t in (1.0, 2.0, 4.0)
    ]
    assert sigmas[0] > sigmas[1] > sigmas[2]
    assert np.all(np.isfinite(sigmas))
