"""The released distribution of control codes: per-code marginals (default) or the joint histogram.

Generation draws a control-code combination for every synthetic record from a distribution released with DP. The
joint histogram over every combination (5 ratings x 24 categories = 120 cells) is sparse at small n: with 136 users
and sigma ~9, the threshold that keeps empty cells out kept 3 of 25 cells of the demo, and the DP arm wrote no
1-3 star record at all, so no classifier could learn ratings from it. Releasing **one histogram per code** (the
marginals) spreads the same people over far fewer cells (5 + 24), so the tail survives; combinations are then drawn
independently per code, which loses the correlation between codes (a weaker signal for most labels than losing
their tail altogether).

Privacy: the marginals are released as ONE Gaussian mechanism over the concatenated domain of ``(code, value)``
cells. A unit's records each put a count in one cell per code; the unit's whole vector is scaled down to L2 norm at
most 1 (:func:`dpsynth.privacy.mechanisms.gaussian_histogram` does exactly that), so the L2 sensitivity stays 1 and
the accountant sees the same ``histogram_mechanism(sigma, cells)`` as for the joint histogram, with ``cells`` the sum
of the domain sizes. A unit with one record and k codes contributes ``1/sqrt(k)`` to one cell of each marginal.

Post-processing (free of privacy cost): each marginal is projected onto the nearest non-negative vector (Euclidean)
whose total is the common total ``T``. When every unit has exactly one record (record-level units, or one record per
user), ``T`` is known without looking at the data: each unit puts ``1/sqrt(k)`` into every marginal, so
``T = n / sqrt(k)`` with ``n`` the number of units, which DP-SGD's sample rate already treats as public. Otherwise
``T`` is the mean of the marginals' noisy totals (every marginal counts the same units, so averaging them is a better
estimate than any one). The projection subtracts one constant
from every cell and clips at zero: it removes the positive noise of empty cells together with the negative noise,
unlike clipping alone, which leaves roughly ``0.4 sigma`` of spurious mass in every empty cell.

>>> from dpsynth.privacy.mechanisms import noise_rng
>>> units = [[{"rating": 5, "topic": "a"}], [{"rating": 1, "topic": "a"}], [{"rating": 5, "topic": "b"}]]
>>> rel = release_marginals(units, {"rating": (1, 5), "topic": ("a", "b")}, sigma=1e-9, rng=noise_rng(0))
>>> [round(p, 3) for p in rel.probabilities("rating")], [round(p, 3) for p in rel.probabilities("topic")]
([0.333, 0.667], [0.667, 0.333])
>>> project_to_simplex([3.0, -1.0, 0.5], total=2.0).round(3).tolist()
[2.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dpsynth.privacy.mechanisms import Cell, HistogramRelease, exact_histogram, flatten, gaussian_histogram

CodeValue = Any
Units = Sequence[Sequence[Mapping[str, CodeValue]]]  # per privacy unit, the codes of each of its records


class CodeRelease(Protocol):
    """What generation needs of a released code distribution."""

    @property
    def names(self) -> tuple[str, ...]: ...

    def sample(self, n: int, rng: np.random.Generator, power: CodePower = 1.0) -> list[Cell]: ...

    def to_json(self) -> dict[str, Any]: ...


CodePower = float | Mapping[str, float]  # one exponent for every code, or one per code name (missing: 1.0)


def _power_of(power: CodePower, name: str) -> float:
    return float(power) if isinstance(power, (int, float)) else float(power.get(name, 1.0))


def project_to_simplex(values: Sequence[float] | np.ndarray, total: float) -> np.ndarray:
    """The Euclidean projection of ``values`` onto ``{x >= 0, sum(x) = total}`` (sort-based, Duchi et al. 2008)."""
    v = np.asarray(values, dtype=np.float64)
    if total <= 0 or v.size == 0:
        return np.zeros_like(v)
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - total
    k = np.arange(1, v.size + 1)
    rho = int(np.nonzero(u - css / k > 0)[0][-1])
    tau = css[rho] / (rho + 1)
    return np.maximum(v - tau, 0.0)


@dataclass(frozen=True)
class MarginalRelease:
    """Released per-code marginals over public domains (``sigma == 0``: the exact counts of the non-DP arm)."""

    names: tuple[str, ...]
    histogram: HistogramRelease  # over (name, value) cells, in the order of ``names`` and each domain
    known_total: float | None = None  # n / sqrt(k) when every unit has one record (public); else estimated

    def counts(self, name: str) -> tuple[tuple[CodeValue, ...], np.ndarray]:
        """The domain of ``name`` and its noisy counts."""
        values, counts = [], []
        for (cell_name, value), count in zip(self.histogram.cells, self.histogram.noisy_counts, strict=True):
            if cell_name == name:
                values.append(value)
                counts.append(count)
        if not values:
            raise KeyError(name)
        return tuple(values), np.asarray(counts, dtype=np.float64)

    @property
    def total(self) -> float:
        """The common total of every marginal: known (``n / sqrt(k)``) or the mean of their noisy totals."""
        if self.known_total is not None:
            return float(self.known_total)
        return float(np.mean([self.counts(name)[1].sum() for name in self.names]))

    def probabilities(self, name: str) -> tuple[float, ...]:
        """The marginal of ``name`` after projection onto the simplex of :attr:`total` (uniform if nothing is left)."""
        values, counts = self.counts(name)
        projected = np.maximum(counts, 0.0) if self.histogram.sigma == 0 else project_to_simplex(counts, self.total)
        s = projected.sum()
        if s <= 0:
            return tuple([1.0 / len(values)] * len(values))
        return tuple(float(p) for p in projected / s)

    def sample(self, n: int, rng: np.random.Generator, power: CodePower = 1.0) -> list[Cell]:
        """``n`` combinations, each code drawn independently from its marginal (in the order of :attr:`names`),
        flattened by ``power`` (:func:`flatten`; per code name when a mapping)."""
        columns = []
        for name in self.names:
            values, _ = self.counts(name)
            idx = rng.choice(len(values), size=n, p=flatten(self.probabilities(name), _power_of(power, name)))
            columns.append([values[i] for i in idx])
        return [tuple(col[i] for col in columns) for i in range(n)]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "marginals",
            "names": list(self.names),
            "histogram": self.histogram.to_json(),
            "total": self.total,
            "known_total": self.known_total,
            "probabilities": {name: list(self.probabilities(name)) for name in self.names},
        }


@dataclass(frozen=True)
class JointRelease:
    """The joint histogram over every combination (the original release; thresholded, see HistogramRelease)."""

    names: tuple[str, ...]
    histogram: HistogramRelease

    def sample(self, n: int, rng: np.random.Generator, power: CodePower = 1.0) -> list[Cell]:
        """``n`` cells of the joint histogram; ``power`` (one number: the cells are combinations) flattens it
        (:func:`flatten`; at 0 uniform over every combination of the public domains)."""
        if not isinstance(power, (int, float)):
            raise ValueError("generate.code_power per code name needs privacy.code_release=marginals")
        return self.histogram.sample(n, rng, flatten_by=float(power))

    def probabilities(self, name: str) -> tuple[float, ...]:
        """The marginal of ``name`` implied by the joint's probabilities (for reports)."""
        i = self.names.index(name)
        values = list(dict.fromkeys(c[i] for c in self.histogram.cells))
        probs = dict.fromkeys(values, 0.0)
        for cell, p in zip(self.histogram.cells, self.histogram.probabilities, strict=True):
            probs[cell[i]] += p
        return tuple(probs[v] for v in values)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "joint", "names": list(self.names), **self.histogram.to_json()}


def domain_cells(domains: Mapping[str, Sequence[CodeValue]], kind: str) -> list[Cell]:
    """The released cells: ``(name, value)`` pairs for marginals, every combination for the joint histogram."""
    if kind == "marginals":
        return [(name, v) for name, values in domains.items() for v in values]
    import itertools

    return [tuple(c) for c in itertools.product(*domains.values())]


def _unit_cells(units: Units, names: Sequence[str], kind: str) -> list[list[Cell]]:
    if kind == "marginals":
        return [[(name, codes[name]) for codes in unit for name in names] for unit in units]
    return [[tuple(codes[name] for name in names) for codes in unit] for unit in units]


def release_marginals(
    units: Units,
    domains: Mapping[str, Sequence[CodeValue]],
    sigma: float | None,
    rng: np.random.Generator | None,
    *,
    one_record_per_unit: bool = False,
) -> MarginalRelease:
    """Per-code marginals of ``units``: Gaussian with std ``sigma`` (L2 sensitivity 1), or exact when sigma is None.

    ``one_record_per_unit``: a public promise (from the configuration, checked here) that makes the common total
    ``len(units) / sqrt(k)`` known exactly.
    """
    names = tuple(domains)
    cells = domain_cells(domains, "marginals")
    per_unit = _unit_cells(units, names, "marginals")
    known = None
    if one_record_per_unit:
        if any(len(u) != 1 for u in units):
            raise ValueError("one_record_per_unit, but a unit has another number of records")
        known = len(units) / float(np.sqrt(len(names)))
    if sigma is None:
        return MarginalRelease(names, exact_histogram(per_unit, cells), known)
    assert rng is not None
    return MarginalRelease(names, gaussian_histogram(per_unit, cells, sigma, rng), known)


def release_joint(
    units: Units, domains: Mapping[str, Sequence[CodeValue]], sigma: float | None, rng: np.random.Generator | None
) -> JointRelease:
    """The joint histogram of ``units`` over every combination (Gaussian, or exact when sigma is None)."""
    names = tuple(domains)
    cells = domain_cells(domains, "joint")
    per_unit = _unit_cells(units, names, "joint")
    if sigma is None:
        return JointRelease(names, exact_histogram(per_unit, cells))
    assert rng is not None
    return JointRelease(names, gaussian_histogram(per_unit, cells, sigma, rng))


def release_codes(
    units: Units,
    domains: Mapping[str, Sequence[CodeValue]],
    kind: str,
    sigma: float | None,
    rng: np.random.Generator | None = None,
    *,
    one_record_per_unit: bool = False,
) -> MarginalRelease | JointRelease:
    """Release the code distribution as configured (``privacy.code_release``)."""
    if kind == "marginals":
        return release_marginals(units, domains, sigma, rng, one_record_per_unit=one_record_per_unit)
    if kind == "joint":
        return release_joint(units, domains, sigma, rng)
    raise ValueError(f"unknown code release {kind!r} (marginals or joint)")


def load_code_release(obj: Mapping[str, Any], names: Sequence[str]) -> MarginalRelease | JointRelease:
    """The release stored in ``control_codes.json`` (files written before marginals existed hold a joint one)."""
    if obj.get("kind") == "marginals":
        known = obj.get("known_total")
        return MarginalRelease(
            tuple(obj["names"]), HistogramRelease.from_json(obj["histogram"]), None if known is None else float(known)
        )
    return JointRelease(tuple(names), HistogramRelease.from_json(obj))
