"""Privacy accounting: the only place in dpsynth that computes epsilon.

Every differentially private step dpsynth takes is a (possibly Poisson-subsampled) Gaussian mechanism, described by a
:class:`Mechanism`: noise multiplier, sample rate, number of steps. DP-SGD is ``(sigma, q, T)``; the Gaussian histogram
of control codes is one full-data Gaussian, ``(sigma, 1.0, 1)``. :func:`epsilon` composes *all* the mechanisms of a
release (or of every release of a source) in one Opacus accountant, so the composition is as tight as that accountant
can make it, never a sum of per-mechanism epsilons.

>>> sgd = dp_sgd_mechanism(1.5, 0.04, 2250, max_grad_norm=1.0)
>>> round(epsilon([sgd], 1e-5, "rdp"), 6)
7.329111
>>> Mechanism.from_json(sgd.to_json()) == sgd
True
>>> default_delta(1000)
1e-05
>>> default_delta(10**7)
1e-08

Why these choices:

* **PRV at sample rate 1.** Opacus's ``PoissonSubsampledGaussianPRV`` evaluates ``log(1 - q)``, which is ``-inf`` at
  ``q = 1``: numpy warns (divide by zero) but the formulas are then exactly those of the full Gaussian mechanism's
  privacy loss ``N(1/(2 sigma^2), 1/sigma^2)`` (the support condition ``t > log(1-q)`` holds for every ``t`` and
  ``log((e^t + q - 1)/q) = t``). So the result is correct; we only silence that one numpy warning around the call (a
  ``-W error`` run would otherwise turn a correct computation into a crash). ``tests/privacy`` checks the PRV epsilon of
  a lone Gaussian against the exact analytic value (Balle and Wang 2018): it is an upper bound within Opacus's
  ``eps_error`` of 0.01.
* **RDP orders.** We use Opacus's default orders plus a few large ones (up to 1024). Opacus's grid stops at 63, which
  puts a floor of about 0.1 on any RDP epsilon at delta 1e-5, however large the noise; a control-code histogram that
  gets 5 % of a small budget needs less than that. Adding orders can only lower (tighten) the bound; at the usual
  DP-SGD settings the optimum is a small order and nothing changes (the Opacus test anchor 7.32911117143 is
  reproduced). Opacus's "optimal order is the largest alpha" warning is silenced: it only says the bound could be
  tighter, never that it is invalid.
* **Calibration never overshoots.** The returned noise multiplier is always one whose epsilon was *computed* (with the
  same function callers use afterwards) and found ``<= target``; the root finder only decides which points to try.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from scipy.optimize import brentq

from dpsynth.errors import ConfigError

AccountantName = Literal["prv", "rdp"]
ACCOUNTANTS: tuple[str, ...] = ("prv", "rdp")

DP_SGD = "dp_sgd"
GAUSSIAN_HISTOGRAM = "gaussian_histogram"
PE_HISTOGRAM = "pe_nn_histogram"

RDP_ORDERS: tuple[float, ...] = (*RDPAccountant.DEFAULT_ALPHAS, 80, 96, 128, 192, 256, 384, 512, 768, 1024)
"""RDP orders used with the RDP accountant: Opacus's defaults plus large orders (see the module docstring)."""

MAX_NOISE_MULTIPLIER = 1e6
"""Calibration gives up (target unreachable) above this noise multiplier, as Opacus's ``get_noise_multiplier`` does."""

CALIBRATION_RTOL = 1e-3
"""Relative tolerance on the calibrated noise multiplier (it is at most this much larger than the smallest one)."""


@dataclass(frozen=True)
class Mechanism:
    """One (subsampled) Gaussian mechanism, as an accountant sees it, plus parameters kept for the record.

    ``noise_multiplier`` is the noise standard deviation divided by the L2 sensitivity; ``sample_rate`` is the Poisson
    sampling rate (1.0: the whole data set); ``steps`` how many times it ran. ``params`` (e.g. ``max_grad_norm``,
    ``sensitivity``, ``cells``) do not enter the accounting; they say what the numbers meant.
    """

    name: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a mechanism needs a name")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ValueError(f"mechanism {self.name!r}: noise multiplier must be positive, got {self.noise_multiplier}")
        if not (0 < self.sample_rate <= 1):
            raise ValueError(f"mechanism {self.name!r}: sample rate must be in (0, 1], got {self.sample_rate}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise ValueError(f"mechanism {self.name!r}: steps must be a non-negative integer, got {self.steps!r}")
        params = dict(self.params)
        try:  # params end up in privacy.json and the ledger: they must be plain JSON
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"mechanism {self.name!r}: params must be JSON-serializable ({exc})") from exc
        object.__setattr__(self, "noise_multiplier", float(self.noise_multiplier))
        object.__setattr__(self, "sample_rate", float(self.sample_rate))
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "params", MappingProxyType(params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mechanism):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def history_entry(self) -> tuple[float, float, int]:
        """The ``(noise_multiplier, sample_rate, steps)`` triple of an Opacus accountant's ``history``."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Mechanism:
        return cls(
            name=str(obj["name"]),
            noise_multiplier=float(obj["noise_multiplier"]),
            sample_rate=float(obj["sample_rate"]),
            steps=int(obj["steps"]),
            params=dict(obj.get("params") or {}),
        )


def dp_sgd_mechanism(noise_multiplier: float, sample_rate: float, steps: int, max_grad_norm: float) -> Mechanism:
    """DP-SGD with Poisson sampling: ``steps`` noisy steps, each on a batch drawn at ``sample_rate``."""
    return Mechanism(DP_SGD, noise_multiplier, sample_rate, steps, {"max_grad_norm": float(max_grad_norm)})


def histogram_mechanism(sigma: float, cells: int) -> Mechanism:
    """The Gaussian histogram of control codes: one release over the whole data set, L2 sensitivity 1.

    ``cells`` is the size of the public domain (every cell gets noise); ``sigma`` is the noise standard deviation, which
    equals the noise multiplier because the sensitivity is 1 (:mod:`dpsynth.privacy.mechanisms`).
    """
    if isinstance(cells, bool) or int(cells) != cells or cells < 1:
        raise ValueError(f"a histogram needs a positive number of cells, got {cells!r}")
    return Mechanism(GAUSSIAN_HISTOGRAM, sigma, 1.0, 1, {"sensitivity": 1.0, "cells": int(cells)})


def pe_histogram_mechanism(sigma: float, iterations: int, candidates: int) -> Mechanism:
    """Private Evolution's nearest-neighbour vote histograms: ``iterations`` full-data Gaussian releases.

    Each privacy unit casts one vote per iteration (for its nearest candidate), so one unit moves the histogram by at
    most 1 in L2: sensitivity 1, and ``sigma`` (the noise standard deviation) is the noise multiplier. ``candidates``
    (the population voted on, every cell of which gets noise) is kept for the record. :mod:`dpsynth.pe.privacy`.
    """
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
        raise ValueError(f"Private Evolution needs at least one iteration, got {iterations!r}")
    params = {"sensitivity": 1.0, "votes_per_unit": 1, "candidates": int(candidates)}
    return Mechanism(PE_HISTOGRAM, sigma, 1.0, int(iterations), params)


def default_delta(n: int) -> float:
    """``min(1e-5, 1/(10 n))``: always below ``1/n`` for ``n`` privacy units (a delta near 1/n permits leaking one)."""
    if n < 1:
        raise ConfigError(f"cannot choose delta for {n} privacy units (need at least one)")
    return min(1e-5, 1.0 / (10 * n))


def _check_accounting_args(delta: float, accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"unknown accountant {accountant!r} (choose one of {', '.join(ACCOUNTANTS)})")
    if not (0 < delta < 1):
        raise ConfigError(f"delta must be in (0, 1), got {delta}")


def epsilon(mechanisms: Sequence[Mechanism], delta: float, accountant: AccountantName) -> float:
    """The epsilon, at ``delta``, of all ``mechanisms`` composed in one Opacus accountant.

    Mechanisms with zero steps spend nothing and are left out; no mechanism at all is epsilon 0.
    """
    _check_accounting_args(delta, accountant)
    history = [m.history_entry() for m in mechanisms if m.steps > 0]
    if not history:
        return 0.0
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        # np.errstate: log(1 - q) at q = 1 inside Opacus's PRV (correct, see the module docstring).
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        if accountant == "rdp":
            rdp = RDPAccountant()
            rdp.history = history
            eps = rdp.get_epsilon(delta, alphas=list(RDP_ORDERS))
        else:
            prv = PRVAccountant()
            prv.history = history
            eps = prv.get_epsilon(delta)
    eps = float(eps)
    if math.isnan(eps):
        raise ArithmeticError(f"the {accountant} accountant returned NaN for history {history} at delta {delta}")
    return max(eps, 0.0)


def _safe_epsilon(mechanisms: Sequence[Mechanism], delta: float, accountant: AccountantName) -> float:
    """:func:`epsilon`, with numerical failures of the accountant read as "too much" (infinity).

    Only calibration uses this: a noise multiplier whose epsilon cannot be computed is never returned, so treating a
    failure as infinite epsilon is conservative. (PRV can fail, e.g. "Discrete mean differs significantly from
    continuous mean", at extreme noise levels.)
    """
    try:
        return epsilon(mechanisms, delta, accountant)
    except (ValueError, RuntimeError, ArithmeticError, OverflowError, MemoryError):
        return math.inf


def _calibrate(
    make: Callable[[float], list[Mechanism]],
    *,
    target_epsilon: float,
    delta: float,
    accountant: AccountantName,
    start: float,
    factor: float = 2.0,
) -> float:
    """Smallest noise multiplier ``s`` (within :data:`CALIBRATION_RTOL`) with ``epsilon(make(s)) <= target``.

    Brackets the answer by stepping by ``factor`` up or down from ``start``, then runs Brent's method on ``log s``.
    Every point tried is remembered; the answer is the smallest tried point that passed, so it is always verified,
    never interpolated.
    """
    passed: dict[float, float] = {}
    seen: dict[float, float] = {}  # brentq re-evaluates the bracket ends; PRV evaluations are worth saving

    def excess(log_sigma: float) -> float:
        if log_sigma not in seen:
            sigma = math.exp(log_sigma)
            eps = _safe_epsilon(make(sigma), delta, accountant)
            if eps <= target_epsilon:
                passed[sigma] = eps
            # finite stand-in for infinity keeps brentq's arithmetic sane; only the sign matters at a bracket end
            seen[log_sigma] = min(eps, 1e12) - target_epsilon
        return seen[log_sigma]

    hi = math.log(start)
    if excess(hi) > 0:
        lo = hi
        while True:
            hi = lo + math.log(factor)
            if hi > math.log(MAX_NOISE_MULTIPLIER):
                raise ConfigError(
                    f"target epsilon {target_epsilon:g} at delta {delta:g} is unreachable with the {accountant} "
                    f"accountant: even noise multiplier {MAX_NOISE_MULTIPLIER:g} spends more"
                )
            if excess(hi) <= 0:
                break
            lo = hi
    else:
        lo = hi
        while True:
            lo = hi - math.log(factor)
            if excess(lo) > 0:
                break
            hi = lo
            if hi < math.log(1e-6):  # epsilon cannot be met-and-more by vanishing noise; guard against a loop
                return min(passed)
    if hi - lo > CALIBRATION_RTOL:
        # ValueError/RuntimeError: non-monotone accountant noise; the best verified point so far stands
        with contextlib.suppress(ValueError, RuntimeError):
            brentq(excess, lo, hi, xtol=CALIBRATION_RTOL / 2, rtol=1e-12, maxiter=100)
    return min(passed)


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName,
    fixed: Sequence[Mechanism] = (),
    mechanism: Callable[[float], Mechanism] | None = None,
) -> float:
    """The smallest DP-SGD noise multiplier such that ``epsilon([*fixed, dp_sgd(sigma)]) <= target_epsilon``.

    "Smallest" within a relative tolerance of :data:`CALIBRATION_RTOL`; the returned value never overshoots the
    target (its epsilon was computed and checked). ``fixed`` holds mechanisms of the same release whose noise is
    already decided (the control-code histogram). Raises :class:`ConfigError` when ``fixed`` alone already spends the
    target or no noise multiplier up to :data:`MAX_NOISE_MULTIPLIER` meets it. ``mechanism(sigma)`` replaces DP-SGD
    by another mechanism of the same ``(sigma, sample_rate, steps)`` (Private Evolution's vote histograms:
    :func:`pe_histogram_mechanism`), so every calibration goes through this one function.
    """
    _check_accounting_args(delta, accountant)
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"target epsilon must be a positive number, got {target_epsilon}")
    if not (0 < sample_rate <= 1):
        raise ConfigError(f"sample rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise ConfigError(f"DP-SGD needs at least one step to calibrate, got {steps}")
    fixed = list(fixed)
    if fixed:
        eps_fixed = epsilon(fixed, delta, accountant)
        if eps_fixed >= target_epsilon:
            names = ", ".join(m.name for m in fixed)
            raise ConfigError(
                f"the fixed mechanisms ({names}) alone spend epsilon {eps_fixed:.4g} at delta {delta:g} "
                f"({accountant}), which leaves nothing of the target epsilon {target_epsilon:g} for DP-SGD; "
                "give them more noise (a smaller share of the budget) or raise the target"
            )

    def make(sigma: float) -> list[Mechanism]:
        if mechanism is not None:
            return [*fixed, mechanism(sigma)]
        return [*fixed, dp_sgd_mechanism(sigma, sample_rate, steps, max_grad_norm=1.0)]

    start = 1.0
    if accountant == "prv":
        # RDP is cheap and (up to PRV's eps_error) looser, so its answer is a good starting point that keeps PRV away
        # from tiny noise multipliers, where its discretisation grid (and run time) explodes.
        try:
            start = _calibrate(make, target_epsilon=target_epsilon, delta=delta, accountant="rdp", start=1.0)
        except ConfigError:
            start = 1.0
        # Small steps from there: PRV's cost grows with the epsilon of the points it is asked about.
        return _calibrate(make, target_epsilon=target_epsilon, delta=delta, accountant="prv", start=start, factor=1.25)
    return _calibrate(make, target_epsilon=target_epsilon, delta=delta, accountant=accountant, start=start)


def histogram_noise_for_epsilon(epsilon: float, delta: float, accountant: AccountantName) -> float:
    """Sigma of one full-data Gaussian mechanism (sensitivity 1) that alone spends at most ``epsilon`` at ``delta``.

    Same contract as :func:`calibrate_noise_multiplier`: smallest within :data:`CALIBRATION_RTOL`, never over.
    """
    _check_accounting_args(delta, accountant)
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ConfigError(f"histogram epsilon must be a positive number, got {epsilon}")

    def make(sigma: float) -> list[Mechanism]:
        return [histogram_mechanism(sigma, 1)]

    # Start near the classical calibration sigma = sqrt(2 ln(1.25/delta)) / epsilon (an over-estimate for eps < 1).
    start = min(max(math.sqrt(2 * math.log(1.25 / delta)) / epsilon, 1e-3), MAX_NOISE_MULTIPLIER / 4)
    return _calibrate(make, target_epsilon=epsilon, delta=delta, accountant=accountant, start=start)
