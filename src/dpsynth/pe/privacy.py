"""The privacy core of Private Evolution: the plan (calibrated before any record is read) and the DP vote histogram.

**The mechanism.** In each of ``T`` iterations every privacy unit votes once, for the candidate nearest to it in
embedding space among the candidates of its own control-code cell (a user with several records votes for the nearest
candidate over all of them). The histogram of votes over the candidates gets Gaussian noise of standard deviation
``sigma`` on every candidate. Adding or removing one unit changes one count by one (or nothing, when no candidate
shares its cells): the L2 sensitivity is 1, so each iteration is a Gaussian mechanism with noise multiplier
``sigma`` on the whole data set, and ``T`` of them compose (:func:`dpsynth.privacy.accounting.pe_histogram_mechanism`:
``(sigma, q=1, steps=T)``). Which candidates exist is public: they come from the model and from earlier noisy
histograms only. Thresholding, ranking and sampling from the noisy counts are post-processing.

**The plan.** Like DP fine-tuning (:mod:`dpsynth.train.plan`), the control codes are released first, as one
Gaussian histogram of ``privacy.histogram_epsilon_fraction`` of the target, and the vote noise is calibrated so that
both compose to at most ``privacy.target_epsilon`` in the configured accountant; the plan reads nothing private but
the number of units ``n`` (public, as for DP-SGD's sample rate), and the ledger is charged with it before any record
is read.

Nearest neighbours come from scikit-learn (exact search; embeddings are unit vectors, so Euclidean order is cosine
order).

>>> votes = nearest_votes(
...     [np.eye(2)[[0]], np.eye(2)[[1]], np.eye(2)[[1]]], [["a"], ["a"], ["b"]], np.eye(2), ["a", "a"]
... )
>>> votes.tolist()  # the third unit's cell "b" has no candidate: it casts no vote
[1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.errors import ConfigError
from dpsynth.privacy.accounting import (
    Mechanism,
    calibrate_noise_multiplier,
    default_delta,
    epsilon,
    histogram_mechanism,
    histogram_noise_for_epsilon,
    pe_histogram_mechanism,
)

DEFAULT_HISTOGRAM_SIGMA = 10.0
"""Code-release noise when ``privacy.noise_multiplier`` is given without a target (as :mod:`dpsynth.train.plan`)."""


@dataclass(frozen=True)
class PEPlan:
    """What a PE run releases, fixed before any record is read: code histogram and ``iterations`` vote histograms."""

    n: int
    iterations: int
    population: int
    noise_multiplier: float
    histogram_sigma: float
    histogram_cells: int
    delta: float
    accountant: str
    target_epsilon: float | None

    def mechanisms(self, iterations_done: int | None = None) -> list[Mechanism]:
        """The mechanisms after ``iterations_done`` vote histograms (default: all planned)."""
        done = self.iterations if iterations_done is None else iterations_done
        out = [histogram_mechanism(self.histogram_sigma, self.histogram_cells)]
        if done > 0:
            out.append(pe_histogram_mechanism(self.noise_multiplier, done, self.population))
        return out

    def epsilon(self, iterations_done: int | None = None) -> float:
        return epsilon(self.mechanisms(iterations_done), self.delta, self.accountant)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PEPlan:
        return cls(**obj)


def population_size(cfg: Config) -> int:
    """Candidates voted on per iteration (the largest population: the first one), a public quantity."""
    n_sel = cfg.pe.candidates or cfg.generate.num_records
    later = n_sel * (1 + cfg.pe.variations)
    return max(later, initial_size(cfg))


def initial_size(cfg: Config) -> int:
    """Random samples of the first population: ``initial_factor * N * (1 + L)``, at least ``N``."""
    n_sel = cfg.pe.candidates or cfg.generate.num_records
    return max(n_sel, round(cfg.pe.initial_factor * n_sel * (1 + cfg.pe.variations)))


def make_pe_plan(cfg: Config, *, n: int, histogram_cells: int) -> PEPlan:
    """Calibrate the vote noise of ``cfg.pe.iterations`` histograms for ``n`` privacy units (and the code release)."""
    p, t = cfg.privacy, cfg.pe.iterations
    delta = p.delta if p.delta is not None else default_delta(n)
    if delta >= 1.0 / n:
        raise ConfigError(f"privacy.delta={delta:g} must be below 1/n = {1.0 / n:g} for n={n} privacy units")
    if p.histogram_noise_multiplier is not None:
        hist_sigma = p.histogram_noise_multiplier
    elif p.target_epsilon is not None:
        hist_sigma = histogram_noise_for_epsilon(p.histogram_epsilon_fraction * p.target_epsilon, delta, p.accountant)
    else:
        hist_sigma = DEFAULT_HISTOGRAM_SIGMA
    population = population_size(cfg)
    if p.target_epsilon is not None:
        sigma = calibrate_noise_multiplier(
            target_epsilon=p.target_epsilon,
            delta=delta,
            sample_rate=1.0,
            steps=t,
            accountant=p.accountant,
            fixed=[histogram_mechanism(hist_sigma, histogram_cells)],
            mechanism=lambda s: pe_histogram_mechanism(s, t, population),
        )
    else:
        assert p.noise_multiplier is not None  # the config validator guarantees one of the two
        sigma = p.noise_multiplier
    return PEPlan(
        n=n,
        iterations=t,
        population=population,
        noise_multiplier=sigma,
        histogram_sigma=hist_sigma,
        histogram_cells=histogram_cells,
        delta=delta,
        accountant=p.accountant,
        target_epsilon=p.target_epsilon,
    )


# --------------------------------------------------------------------------------------------------------------------
# The vote histogram


def nearest_votes(
    unit_vectors: Sequence[np.ndarray],
    unit_cells: Sequence[Sequence[Hashable]],
    candidates: np.ndarray,
    candidate_cells: Sequence[Hashable],
) -> np.ndarray:
    """Exact vote counts: each unit votes once, for its nearest candidate within its records' cells.

    ``unit_vectors[u]`` holds the embeddings of unit ``u``'s records (one row each) and ``unit_cells[u]`` their
    cells; ``candidates`` the candidates' embeddings, ``candidate_cells`` their cells. A unit whose cells hold no
    candidate casts no vote. Returns a float vector of length ``len(candidates)`` whose total is at most the number
    of units, and which changes by at most 1 in L2 when one unit is added or removed.
    """
    from sklearn.neighbors import NearestNeighbors

    if len(unit_vectors) != len(unit_cells):
        raise ValueError("one list of cells per unit")
    if len(candidates) != len(candidate_cells):
        raise ValueError("one cell per candidate")
    by_cell: dict[Hashable, list[int]] = {}
    for i, cell in enumerate(candidate_cells):
        by_cell.setdefault(cell, []).append(i)
    # every record of every unit, grouped by cell: one exact search per cell
    queries: dict[Hashable, list[tuple[int, np.ndarray]]] = {}
    for u, (vectors, cells) in enumerate(zip(unit_vectors, unit_cells, strict=True)):
        if len(vectors) != len(cells):
            raise ValueError(f"unit #{u}: one cell per record")
        for vec, cell in zip(vectors, cells, strict=True):
            if cell in by_cell:
                queries.setdefault(cell, []).append((u, np.asarray(vec, dtype=np.float32)))
    best: dict[int, tuple[float, int]] = {}  # unit -> (distance, candidate) of its nearest over all its records
    for cell, items in queries.items():
        idx = np.asarray(by_cell[cell])
        nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(candidates[idx])
        dist, pos = nn.kneighbors(np.stack([v for _, v in items]))
        for (u, _), d, p in zip(items, dist[:, 0], pos[:, 0], strict=True):
            cand = int(idx[p])
            if u not in best or (float(d), cand) < best[u]:
                best[u] = (float(d), cand)
    votes = np.zeros(len(candidates), dtype=np.float64)
    for _, cand in best.values():
        votes[cand] += 1.0  # one vote per unit: the sensitivity argument rests on this line
    return votes


def noisy_histogram(votes: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The Gaussian mechanism on the vote histogram: ``N(0, sigma^2)`` on every candidate (sensitivity 1)."""
    if not (sigma > 0 and np.isfinite(sigma)):
        raise ValueError(f"the vote histogram needs a positive sigma, got {sigma}")
    return np.asarray(votes, dtype=np.float64) + rng.normal(0.0, sigma, size=len(votes))


def select(
    noisy: np.ndarray,
    candidate_cells: Sequence[Hashable],
    quota: Mapping[Any, int],
    *,
    cutoff: float,
    mode: str,
    rng: np.random.Generator,
) -> list[int]:
    """Indices of the selected candidates: ``quota[cell]`` per cell, from the noisy counts (post-processing).

    ``rank``: the highest noisy counts of the cell (ties by position); ``sample``: drawn with replacement in
    proportion to the counts above ``cutoff`` (uniformly when none is above it).

    >>> select(np.array([0.1, 3.0, 2.0, 5.0]), ["a", "a", "b", "b"], {"a": 1, "b": 2}, cutoff=0, mode="rank",
    ...        rng=np.random.default_rng(0))
    [1, 3, 2]
    """
    out: list[int] = []
    cells = list(candidate_cells)
    for cell, k in quota.items():
        idx = np.asarray([i for i, c in enumerate(cells) if c == cell], dtype=np.int64)
        if k <= 0:
            continue
        if idx.size == 0:
            raise ValueError(f"cell {cell!r} has a quota of {k} but no candidate")
        counts = noisy[idx]
        if mode == "rank":
            order = idx[np.argsort(-counts, kind="stable")]
            out.extend(int(order[j % len(order)]) for j in range(k))
        elif mode == "sample":
            weights = np.where(counts > cutoff, counts, 0.0)
            p = weights / weights.sum() if weights.sum() > 0 else np.full(len(idx), 1.0 / len(idx))
            out.extend(int(i) for i in rng.choice(idx, size=k, p=p))
        else:
            raise ValueError(f"unknown selection {mode!r} (rank or sample)")
    return out
