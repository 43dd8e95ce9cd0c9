"""The Gaussian histogram of control codes, the one DP release besides the trained model.

Generation draws control codes (star rating, category, ...) for synthetic records from a histogram of the training
records' codes. Read off the private data exactly, that histogram leaks (a rare category reveals a user), so the DP arm
releases it with the Gaussian mechanism:

1. **Public domain.** ``cells`` lists every possible cell, declared by the schema or the config, never read off the
   data; every cell gets noise, including empty ones (skipping empty cells would reveal which cells are empty).
2. **Contribution bounding.** Privacy unit ``i`` (a user) contributes the vector of counts of its records' cells,
   scaled down to L2 norm at most 1. Adding or removing one unit then moves the histogram by at most 1 in L2, however
   many records the unit has: the L2 sensitivity is 1 and the noise multiplier equals ``sigma``.
3. **Noise.** ``N(0, sigma^2)`` on every cell; ``sigma`` comes from :mod:`dpsynth.privacy.accounting`, which also
   accounts for it (``histogram_mechanism(sigma, len(cells))``).
4. **Post-processing.** Probabilities clip negative counts at 0 and normalise (uniform when nothing is left); this is
   post-processing and costs no privacy.

>>> rel = gaussian_histogram([[(5,)], [(5,), (5,), (1,)]], [(1,), (5,)], sigma=1e-9, rng=noise_rng(0))
>>> [round(c, 3) for c in rel.noisy_counts]  # unit 2: (1, 2)/sqrt(5)
[0.447, 1.894]
>>> exact_histogram([[(5,)], [(5,), (5,), (1,)]], [(1,), (5,)]).noisy_counts
(1.0, 3.0)

The noise comes from numpy's PCG64, seeded from fresh OS entropy unless a seed is given (:func:`noise_rng`). That is
the usual practice in DP libraries built on numpy/torch, but it is not a cryptographically secure generator, and
floating-point Gaussian sampling has known theoretical weaknesses (Mironov 2012); we note this rather than hide it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

Cell = tuple[Any, ...]


def noise_rng(seed: int | None) -> np.random.Generator:
    """The generator for DP noise: seeded (reproducible tests, explicit ``noise_seed``) or fresh OS entropy.

    A DP guarantee assumes the noise is unpredictable, so the default (``None``) must never be a fixed seed.
    """
    if seed is None:
        return np.random.default_rng(np.random.SeedSequence())  # SeedSequence() draws 128 bits from the OS
    return np.random.default_rng(seed)


def _domain_index(cells: Sequence[Sequence[Any]]) -> tuple[tuple[Cell, ...], dict[Hashable, int]]:
    domain = tuple(tuple(c) for c in cells)
    if not domain:
        raise ValueError("the histogram domain is empty: declare the control codes' possible values")
    index: dict[Hashable, int] = {}
    for i, cell in enumerate(domain):
        if cell in index:
            raise ValueError(f"cell {cell!r} appears twice in the histogram domain")
        index[cell] = i
    return domain, index


def _unit_vectors(unit_cells: Sequence[Sequence[Sequence[Any]]], index: Mapping[Hashable, int]) -> np.ndarray:
    """Counts per cell for each unit (rows), checking every cell is in the public domain."""
    counts = np.zeros((len(unit_cells), len(index)), dtype=np.float64)
    for u, cells_of_unit in enumerate(unit_cells):
        for cell in cells_of_unit:
            key = tuple(cell)
            j = index.get(key)
            if j is None:
                # The cell value is a control code (public-domain attribute), not record text; naming it is safe.
                raise ValueError(f"privacy unit #{u} has a record in cell {key!r}, outside the declared domain")
            counts[u, j] += 1.0
    return counts


def bounded_contributions(unit_cells: Sequence[Sequence[Sequence[Any]]], cells: Sequence[Sequence[Any]]) -> np.ndarray:
    """Each unit's contribution vector (rows), scaled down to L2 norm at most 1 (sensitivity 1)."""
    _, index = _domain_index(cells)
    counts = _unit_vectors(unit_cells, index)
    norms = np.linalg.norm(counts, axis=1, keepdims=True)
    return counts / np.maximum(norms, 1.0)


def _normal_quantile(p: float) -> float:
    return float(norm.ppf(p))


def flatten(probabilities: Sequence[float], power: float) -> np.ndarray:
    """``p ** power``, renormalized: 1 keeps the distribution, 0 is uniform over the whole domain, 0.5 in between.

    Post-processing of a released distribution (free under DP). At 0, values whose released probability is zero are
    drawn too: the domain is public, so a uniform draw over it needs nothing from the release.

    >>> flatten([0.6, 0.3, 0.1, 0.0], 0.5).round(3).tolist(), flatten([0.6, 0.4, 0.0], 0.0).round(3).tolist()
    ([0.473, 0.334, 0.193, 0.0], [0.333, 0.333, 0.333])
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if not 0.0 <= power <= 1.0:
        raise ValueError(f"a code power must be within [0, 1], got {power}")
    if power == 1.0:
        return p
    q = np.ones_like(p) if power == 0.0 else np.power(p, power)
    return q / q.sum()


@dataclass(frozen=True)
class HistogramRelease:
    """A released histogram over a public domain of cells; ``sigma == 0`` marks the exact (non-DP) histogram."""

    cells: tuple[Cell, ...]
    noisy_counts: tuple[float, ...]
    sigma: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(tuple(c) for c in self.cells))
        object.__setattr__(self, "noisy_counts", tuple(float(x) for x in self.noisy_counts))
        object.__setattr__(self, "sigma", float(self.sigma))
        if len(self.cells) != len(self.noisy_counts):
            raise ValueError(f"{len(self.cells)} cells but {len(self.noisy_counts)} counts")
        if not self.cells:
            raise ValueError("a histogram release needs at least one cell")
        if self.sigma < 0 or not all(math.isfinite(x) for x in self.noisy_counts):
            raise ValueError("sigma must be >= 0 and counts finite")

    @property
    def is_private(self) -> bool:
        return self.sigma > 0

    @property
    def threshold(self) -> float:
        """Noisy counts at or below this are treated as empty cells (0 for the exact histogram).

        With many cells and few units most cells are empty, and clipping their noise at 0 alone still gives them,
        together, more mass than the real cells (120 cells at sigma 10 put ~480 expected counts on empty cells).
        The threshold ``sigma * Phi^-1(1 - 1/cells)`` keeps the expected number of empty cells that survive at about
        one, whatever the domain size. It depends only on public quantities (sigma and the domain), so this is
        post-processing and costs no privacy; the price is that real cells with counts near the threshold may be
        dropped, which matters less than flooding the output with combinations nobody wrote.
        """
        if self.sigma == 0 or len(self.cells) < 2:
            return 0.0
        return float(self.sigma * max(0.0, float(_normal_quantile(1.0 - 1.0 / len(self.cells)))))

    @property
    def probabilities(self) -> tuple[float, ...]:
        """Counts above :attr:`threshold`, normalised (uniform if none is): post-processing, free of privacy cost."""
        counts = np.asarray(self.noisy_counts, dtype=np.float64)
        clipped = np.where(counts > self.threshold, counts, 0.0)
        total = clipped.sum()
        if total <= 0:
            return tuple([1.0 / len(self.cells)] * len(self.cells))
        return tuple(float(p) for p in clipped / total)

    def sample(self, n: int, rng: np.random.Generator, flatten_by: float = 1.0) -> list[Cell]:
        """``n`` cells drawn independently from :attr:`probabilities`, raised to ``flatten_by`` and renormalized
        (:func:`flatten`; 1 keeps them)."""
        if n < 0:
            raise ValueError(f"cannot sample {n} cells")
        idx = rng.choice(len(self.cells), size=n, p=flatten(self.probabilities, flatten_by))
        return [self.cells[i] for i in idx]

    def to_json(self) -> dict[str, Any]:
        return {
            "cells": [list(c) for c in self.cells],
            "noisy_counts": list(self.noisy_counts),
            "sigma": self.sigma,
            "threshold": self.threshold,
            "probabilities": list(self.probabilities),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> HistogramRelease:
        # probabilities are derived; recomputing them keeps one source of truth
        return cls(
            cells=tuple(tuple(c) for c in obj["cells"]),
            noisy_counts=tuple(float(x) for x in obj["noisy_counts"]),
            sigma=float(obj["sigma"]),
        )


def gaussian_histogram(
    unit_cells: Sequence[Sequence[Sequence[Any]]],
    cells: Sequence[Sequence[Any]],
    sigma: float,
    rng: np.random.Generator,
) -> HistogramRelease:
    """Release the histogram of ``unit_cells`` over the public ``cells`` with Gaussian noise of std ``sigma``.

    ``unit_cells[i]`` lists the cells of privacy unit ``i``'s records. L2 sensitivity is 1 (see the module docstring),
    so this is the Gaussian mechanism with noise multiplier ``sigma``; account for it with
    ``accounting.histogram_mechanism(sigma, len(cells))``. A cell outside ``cells`` is a ``ValueError``.
    """
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"the DP histogram needs a positive sigma, got {sigma}")
    domain, _ = _domain_index(cells)
    exact = bounded_contributions(unit_cells, domain).sum(axis=0)
    noisy = exact + rng.normal(0.0, sigma, size=len(domain))
    return HistogramRelease(domain, tuple(noisy.tolist()), sigma)


def exact_histogram(unit_cells: Sequence[Sequence[Sequence[Any]]], cells: Sequence[Sequence[Any]]) -> HistogramRelease:
    """The exact record counts per cell, no bounding and no noise: the non-DP baseline arm's histogram (sigma 0)."""
    domain, index = _domain_index(cells)
    counts = _unit_vectors(unit_cells, index).sum(axis=0)
    return HistogramRelease(domain, tuple(counts.tolist()), 0.0)
