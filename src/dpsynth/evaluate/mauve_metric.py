"""MAUVE (Pillutla et al. 2021) on precomputed embeddings, as one figure or as a mean over several draws.

Why draws: MAUVE quantizes both sides with k-means, and its value moves with the clustering's seed and with which
records are compared (the Yelp sweep's non-DP row: 0.42 to 0.62 over six draws of 1,000 records), too much for one
figure to rank two settings. :func:`mauve_over_draws` reports the mean and the spread instead; the frontier and the
evaluate stage both read it, so their numbers mean the same thing.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p, q = rng.normal(size=(200, 8)), rng.normal(size=(300, 8))
>>> d = mauve_over_draws(p, q, repeats=3, seed=0)
>>> len(d.values), d.n, 0.0 < d.mean <= 1.0, d.sd is not None
(3, 200, True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

KMEANS_SEED = 25  # mauve's own default seed: draw 0 of a sweep is the single figure of sweeps made before draws


def mauve_score(
    p_features: np.ndarray,
    q_features: np.ndarray,
    *,
    num_buckets: int | Literal["auto"] = "auto",
    seed: int = KMEANS_SEED,
    scaling_factor: float = 5.0,
) -> float:
    """MAUVE between two sets of precomputed features (use :func:`dpsynth.evaluate.embeddings.embed` for both).

    Features must be given: ``mauve.compute_mauve`` would otherwise download GPT-2. ``num_buckets="auto"`` clusters
    into ``n / 10`` buckets (at least 2); ``scaling_factor`` is the paper's ``c``. 1 means indistinguishable.
    """
    import mauve

    p = np.asarray(p_features, dtype=np.float32)
    q = np.asarray(q_features, dtype=np.float32)
    if len(p) < 2 or len(q) < 2:
        raise ValueError("MAUVE needs at least two feature vectors on each side")
    buckets: int | str = num_buckets
    if num_buckets == "auto":
        buckets = max(2, min(len(p), len(q)) // 10)
    with quiet_kmeans():
        out = mauve.compute_mauve(
            p_features=p,
            q_features=q,
            num_buckets=buckets,
            seed=seed,
            mauve_scaling_factor=scaling_factor,
            kmeans_num_redo=2,
            kmeans_max_iter=200,
            verbose=False,
        )
    return mauve_from_curve(out.divergence_curve)


@contextlib.contextmanager
def quiet_kmeans() -> Iterator[None]:
    """MAUVE's k-means without faiss's "please provide at least N training points" line on stderr.

    faiss prints it from C (past Python's logging and warnings) whenever a clustering has fewer than
    ``min_points_per_centroid`` (39) points per centroid, and MAUVE's ``n / 10`` buckets always have 10: one line per
    draw, fifteen in the demo's log, nothing a user can act on. That bound only decides the warning (faiss subsamples
    on ``max_points_per_centroid``, not on it), so MAUVE's own k-means runs with it at 1 while this context is open:
    the same clusters, the same score (a test compares both). mauve-text calls ``faiss.Kmeans`` through its module's
    ``faiss`` name, which is swapped for a proxy and restored on exit.
    """
    import importlib

    cm: Any = importlib.import_module("mauve.compute_mauve")  # the module (the package attribute is the function)
    faiss = cm.faiss

    class _Kmeans(faiss.Kmeans):  # type: ignore[name-defined]
        def __init__(self, d: int, k: int, **kwargs: Any) -> None:
            kwargs.setdefault("min_points_per_centroid", 1)
            super().__init__(d, k, **kwargs)

    class _Faiss:
        Kmeans = _Kmeans

        def __getattr__(self, name: str) -> Any:
            return getattr(faiss, name)

    cm.faiss = _Faiss()
    try:
        yield
    finally:
        cm.faiss = faiss


def mauve_from_curve(curve: np.ndarray) -> float:
    """MAUVE (the area under the divergence curve, averaged over both axes) integrated in the curve's own order.

    ``mauve.compute_mauve`` sorts the curve's points by one coordinate before integrating. When P and Q have identical
    histograms every inner point is (1, 1) and ties with an end point; the order of the tie is arbitrary and the
    score can come out below 1 (0.75 for 40 templated sentences compared with themselves). The curve, as computed,
    runs from (1, 0) to (0, 1) with x non-increasing and y non-decreasing (``KL(Q || R)`` grows and ``KL(P || R)``
    shrinks along the mixture ``R = w P + (1 - w) Q``), so integrating in that order is exact and tie-free; it equals
    the library's value whenever there are no ties.

    >>> mauve_from_curve(np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0]]))
    1.0
    """
    x, y = np.asarray(curve, dtype=float).T
    area_y_dx = np.trapezoid(y[::-1], x[::-1])
    area_x_dy = np.trapezoid(x, y)
    return float(0.5 * (area_y_dx + area_x_dy))


@dataclass(frozen=True)
class MauveDraws:
    """MAUVE's values over independent draws, and how many records each side of a draw held."""

    values: tuple[float, ...]
    n: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def sd(self) -> float | None:
        """The sample standard deviation over draws (``None`` for a single draw: no spread was measured)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else None


def mauve_over_draws(p: np.ndarray, q: np.ndarray, *, repeats: int, seed: int) -> MauveDraws:
    """MAUVE over ``repeats`` draws: draw ``i`` compares ``n = min(len(p), len(q))`` records drawn without replacement
    from each side (generator seeded ``seed + i``), clustered with k-means seed ``25 + i``.

    Equal sizes on both sides keep the score's sample-size bias the same for every row it ranks (MAUVE on unequal
    sides is not comparable across sizes); the seeds make every draw reproducible, and draw 0 is the single figure
    this function's callers reported before it took draws.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    n = min(len(p), len(q))
    if n < 2:
        raise ValueError("MAUVE needs at least two feature vectors on each side")
    values = []
    for i in range(repeats):
        rng = np.random.default_rng(seed + i)
        a = p[rng.choice(len(p), n, replace=False)]
        b = q[rng.choice(len(q), n, replace=False)]
        values.append(mauve_score(a, b, seed=KMEANS_SEED + i))
    return MauveDraws(tuple(values), n)
