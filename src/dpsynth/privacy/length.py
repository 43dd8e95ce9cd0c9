"""A DP release of the length bound: ``data.max_tokens=auto``.

``data.max_tokens`` cuts every response for training and, with it, how long the synthetic records may be. A fixed
default suits no data set: on the public proxy (Amazon reviews, median response 60 tokens) 64 tokens was as good as
128, while Yelp's reviews run about twice as long, and a bound read off the private data is itself a release (the
developers' guide: "length limits ... are public or paid for with DP"). ``auto`` releases it:

* each response's token count (the response exactly as training tokenizes it) falls in one cell of the public grid
  ``data.max_tokens_grid`` (default 32, 64, 128, 256) plus one cell for longer ones;
* the histogram over those cells is released with the Gaussian mechanism of :mod:`dpsynth.privacy.mechanisms`
  (a unit's cells scaled to L2 norm at most 1: sensitivity 1, whatever the unit's number of records), at the
  noise of ``privacy.length_epsilon_fraction`` of the target epsilon alone, and composed with DP-SGD and the code
  histogram in the DP arm's one accountant, so the target covers all three (:mod:`dpsynth.train.plan`);
* the bound is the smallest grid value at or above the ``data.max_tokens_quantile`` quantile (default the median) of
  the noisy histogram, counts clipped at zero: post-processing, free of privacy cost.

The rule (grid, median, 5%) was fixed on 2026-12-05 before any private data set's release was drawn, though not in
ignorance of Yelp: a one-off 128-token report there prompted it. On the public proxy (54% of responses within 64
tokens) it gives 64, the value the proxy's search chose (bench/results/recipe-search/).

>>> from dpsynth.privacy.mechanisms import noise_rng
>>> units = [[40], [50], [100], [120], [130]]  # one response per unit, in tokens
>>> release_length(units, grid=(32, 64, 128, 256), quantile=0.5, sigma=None).max_tokens
128
>>> release_length(units, grid=(32, 64, 128, 256), quantile=0.4, sigma=None).max_tokens
64
>>> rel = release_length(units, grid=(32, 64, 128, 256), quantile=0.5, sigma=1e-6, rng=noise_rng(0))
>>> rel.max_tokens, rel.histogram.is_private
(128, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpsynth.privacy.accounting import Mechanism, histogram_mechanism
from dpsynth.privacy.mechanisms import HistogramRelease, bounded_contributions, gaussian_histogram

DEFAULT_GRID = (32, 64, 128, 256)


def length_cell(tokens: int, grid: Sequence[int]) -> tuple[int]:
    """The cell of a response of ``tokens`` tokens: the index of the first grid value it fits in, or ``len(grid)``
    (longer than every grid value)."""
    for i, bound in enumerate(grid):
        if tokens <= bound:
            return (i,)
    return (len(grid),)


LENGTH_MECHANISM = "length_histogram"
"""The release's name in privacy.json and the ledger."""


def length_mechanism(sigma: float, grid: Sequence[int]) -> Mechanism:
    """What the accountant sees of the release: one full-data Gaussian histogram over ``len(grid) + 1`` cells."""
    mech = histogram_mechanism(sigma, len(grid) + 1)
    return Mechanism(LENGTH_MECHANISM, mech.noise_multiplier, 1.0, 1, {**mech.params, "grid": list(grid)})


def choose_bound(counts: Sequence[float], grid: Sequence[int], quantile: float) -> int | None:
    """The smallest grid value whose cumulative share of the (clipped) counts reaches ``quantile``; the largest when
    only the cell beyond the grid does; None when no count is positive (nothing to go on)."""
    c = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    total = float(c.sum())
    if total <= 0:
        return None
    shares = np.cumsum(c[: len(grid)]) / total
    for bound, share in zip(grid, shares, strict=True):
        if share >= quantile:
            return int(bound)
    return int(grid[-1])


@dataclass(frozen=True)
class LengthRelease:
    """The released histogram of response lengths and the bound chosen from it (``sigma == 0``: exact, not DP)."""

    grid: tuple[int, ...]
    quantile: float
    histogram: HistogramRelease
    max_tokens: int

    def mechanism(self) -> Mechanism | None:
        """The release's mechanism for the accountant (None for the exact histogram, which is no DP release)."""
        return length_mechanism(self.histogram.sigma, self.grid) if self.histogram.is_private else None

    def to_json(self) -> dict[str, Any]:
        return {
            "grid": list(self.grid),
            "quantile": self.quantile,
            "max_tokens": self.max_tokens,
            "sigma": self.histogram.sigma,
            "noisy_counts": list(self.histogram.noisy_counts),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> LengthRelease:
        grid = tuple(int(g) for g in obj["grid"])
        hist = HistogramRelease(
            tuple((i,) for i in range(len(grid) + 1)), tuple(obj["noisy_counts"]), float(obj["sigma"])
        )
        return cls(grid, float(obj["quantile"]), hist, int(obj["max_tokens"]))


def release_length(
    unit_lengths: Sequence[Sequence[int]],
    *,
    grid: Sequence[int] = DEFAULT_GRID,
    quantile: float = 0.5,
    sigma: float | None,
    rng: np.random.Generator | None = None,
    fallback: int | None = None,
) -> LengthRelease:
    """Release the length bound of ``unit_lengths`` (per privacy unit, the token count of each of its responses).

    ``sigma`` None: the exact histogram (a non-DP baseline, never released). ``fallback``: the bound when the noisy
    histogram holds no positive count (default: the grid's middle value).
    """
    grid = tuple(int(g) for g in grid)
    if not grid or list(grid) != sorted(set(grid)) or grid[0] < 1:
        raise ValueError(f"the length grid must be increasing positive token counts, got {list(grid)}")
    if not 0 < quantile < 1:
        raise ValueError(f"the length quantile must be within (0, 1), got {quantile}")
    cells = [(i,) for i in range(len(grid) + 1)]
    unit_cells = [[length_cell(n, grid) for n in unit] for unit in unit_lengths]
    if sigma is None:  # the same bounded contributions as the DP release, without noise: both estimate one median
        hist = HistogramRelease(tuple(cells), tuple(bounded_contributions(unit_cells, cells).sum(axis=0)), 0.0)
    else:
        if rng is None:
            raise ValueError("a DP length release needs a noise generator")
        hist = gaussian_histogram(unit_cells, cells, sigma, rng)
    bound = choose_bound(hist.noisy_counts, grid, quantile)
    if bound is None:
        bound = fallback if fallback is not None else grid[len(grid) // 2]
    return LengthRelease(grid, float(quantile), hist, bound)
