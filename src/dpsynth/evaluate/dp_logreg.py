"""A differentially private logistic-regression baseline: output perturbation (Chaudhuri, Monteleoni, Sarwate 2011).

Why: the utility table compares classifiers trained on synthetic text with one trained *directly* on the real training
data under DP at a given epsilon. If the synthetic data does worse than this simple baseline at the same epsilon, the
generator is not worth its privacy budget for this task.

The mechanism (Algorithm 1 of Chaudhuri et al., "Differentially Private Empirical Risk Minimization", JMLR 2011,
extended from binary to multinomial logistic loss through its Lipschitz constant):

* **Features.** Each row ``x`` is L2-normalised and a constant 1 is appended, then the row is scaled by ``1/sqrt(2)``,
  so ``||x'|| <= 1`` and the intercept is a regularised weight like the others. The feature map must not depend on
  the private data (pretrained sentence embeddings, or a hashing vectorizer; not a TF-IDF fitted to the data).
* **Objective.** ``J(W) = (1/n) sum_i CE(W x'_i, y_i) + (lam/2) ||W||_F^2`` with ``W`` of shape ``(K, D)`` over the
  PUBLIC class domain (``K`` classes, whether or not each occurs in the data). ``J`` is ``lam``-strongly convex.
* **Lipschitz constant.** The gradient of ``CE`` w.r.t. ``W`` is ``(p - e_y) x'^T``, of Frobenius norm
  ``||p - e_y|| ||x'|| <= sqrt((1 - p_y)^2 + sum_{k != y} p_k^2) <= sqrt(2)``; so ``L = sqrt(2)``.
* **Sensitivity.** Neighbouring data sets differ by replacing one privacy unit that contributes at most ``m`` records
  (``n`` is fixed and public). The two objectives differ by ``g``, the change of ``m`` loss terms over ``n``, with
  ``||grad g|| <= 2 L m / n``; for a ``lam``-strongly convex objective the minimiser then moves by at most
  ``||grad g|| / lam`` (the sensitivity argument of Chaudhuri et al., Section 3), so for the exact minimisers
  ``||W*(D) - W*(D')|| <= 2 L m / (n lam)``. The solver stops only once ``||grad J|| <= tau`` for a fixed, public
  ``tau``; by strong convexity the returned ``W`` is within ``tau / lam`` of the exact minimiser, so the L2
  sensitivity of what is released is ``Delta = (2 L m / n + 2 tau) / lam``. If the solver cannot reach ``tau``
  nothing is released (an error).
* **Noise.** ``b`` with density proportional to ``exp(-epsilon ||b|| / Delta)`` on ``R^(K D)``: its norm is
  ``Gamma(K D, Delta / epsilon)`` and its direction uniform. Releasing ``W + b`` is ``(epsilon, 0)``-DP (pure DP).

Floating-point effects on the noise are ignored, as in most DP libraries. The noise norm grows with ``K D / (n lam
epsilon)``: with 384-dimensional embeddings this baseline needs a large ``n`` or epsilon, which is the known weakness
of output perturbation, and is what the table should show.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

LIPSCHITZ = math.sqrt(2.0)
MECHANISM = "output perturbation for L2-regularised multinomial logistic regression (Chaudhuri et al. 2011)"


def prepare_features(X: np.ndarray) -> np.ndarray:
    """L2-normalise rows, append a constant 1, scale by 1/sqrt(2): every row then has norm at most 1.

    >>> bool(np.all(np.linalg.norm(prepare_features(np.array([[3.0, 4.0], [0.0, 0.0]])), axis=1) <= 1 + 1e-12))
    True
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError("features must be a 2-D array")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Xn = np.divide(X, norms, out=np.zeros_like(X), where=norms > 0)
    return np.hstack([Xn, np.ones((len(X), 1))]) / math.sqrt(2.0)


def _objective(w: np.ndarray, X: np.ndarray, Y: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    n, d = X.shape
    W = w.reshape(Y.shape[1], d)
    Z = X @ W.T
    lse = logsumexp(Z, axis=1)
    loss = float(np.mean(lse - np.sum(Z * Y, axis=1)) + 0.5 * lam * np.sum(W * W))
    grad = (softmax(Z, axis=1) - Y).T @ X / n + lam * W
    return loss, grad.ravel()


def sample_noise(dim: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A vector with density proportional to ``exp(-||b|| / scale)`` on ``R^dim``: Gamma(dim, scale) norm, uniform
    direction."""
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    return direction * rng.gamma(shape=dim, scale=scale)


@dataclass
class DPLogisticRegression:
    """A released DP model: weights over the public ``classes`` and the record of how it was made private."""

    classes: list[Hashable]
    weights: np.ndarray  # (K, D + 1), noise included
    privacy: dict[str, Any] = field(default_factory=dict)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return prepare_features(X) @ self.weights.T

    def predict(self, X: np.ndarray) -> list[Hashable]:
        idx = np.argmax(self.decision_function(X), axis=1)
        return [self.classes[i] for i in idx]


def fit_dp_logistic_regression(
    X: np.ndarray,
    y: Sequence[Hashable],
    classes: Sequence[Hashable],
    epsilon: float | None,
    *,
    lam: float = 1e-2,
    unit_contribution: int = 1,
    tolerance_fraction: float = 0.01,
    rng: np.random.Generator | None = None,
) -> DPLogisticRegression:
    """Fit the regularised model and release it with output perturbation at ``(epsilon, 0)``.

    ``classes``: the public class domain. ``unit_contribution``: the most records one privacy unit has in ``X`` (the
    caller bounds it). ``epsilon=None`` fits the same model with no noise (the non-private reference at the same
    ``lam``; its privacy record says so). ``tolerance_fraction``: the solver's public gradient-norm tolerance ``tau``
    as a fraction of ``L m / n``, which inflates the sensitivity by ``tolerance_fraction`` times (1% by default).
    ``rng``: the noise source; by default fresh OS entropy (a fixed seed is for tests only).
    """
    classes = list(classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError("the class domain needs at least two distinct classes")
    if epsilon is not None and not epsilon > 0:
        raise ValueError("epsilon must be positive (or None for the non-private reference)")
    if lam <= 0 or unit_contribution < 1 or tolerance_fraction <= 0:
        raise ValueError("lam and tolerance_fraction must be positive and unit_contribution at least 1")
    Xp = prepare_features(X)
    n, d = Xp.shape
    if n == 0 or len(y) != n:
        raise ValueError("X and y must be non-empty and of the same length")
    index = {c: i for i, c in enumerate(classes)}
    unknown = {v for v in y if v not in index}
    if unknown:
        raise ValueError(f"{len(unknown)} label value(s) outside the public class domain")
    Y = np.zeros((n, len(classes)))
    Y[np.arange(n), [index[v] for v in y]] = 1.0
    tau = tolerance_fraction * LIPSCHITZ * unit_contribution / n
    k_d = len(classes) * d
    result = minimize(
        _objective,
        np.zeros(k_d),
        args=(Xp, Y, lam),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 20000, "gtol": tau / (10 * math.sqrt(k_d)), "ftol": 0.0},
    )
    grad_norm = float(np.linalg.norm(_objective(result.x, Xp, Y, lam)[1]))
    if grad_norm > tau:
        raise RuntimeError(
            f"the solver stopped at gradient norm {grad_norm:.3g} > tolerance {tau:.3g}; "
            "nothing is released (raise lam or tolerance_fraction)"
        )
    sensitivity = (2 * LIPSCHITZ * unit_contribution / n + 2 * tau) / lam
    weights = result.x.reshape(len(classes), d)
    privacy: dict[str, Any] = {
        "mechanism": MECHANISM,
        "epsilon": epsilon,
        "delta": 0.0 if epsilon is not None else None,
        "neighbouring": "replace one privacy unit (n fixed and public)",
        "unit_contribution": unit_contribution,
        "n": n,
        "lambda": lam,
        "lipschitz": LIPSCHITZ,
        "solver_tolerance": tau,
        "l2_sensitivity": sensitivity,
        "dimension": k_d,
        "private": epsilon is not None,
    }
    if epsilon is not None:
        rng = rng if rng is not None else np.random.default_rng()
        scale = sensitivity / epsilon
        weights = weights + sample_noise(k_d, scale, rng).reshape(weights.shape)
        privacy["noise_scale"] = scale
        privacy["expected_noise_norm"] = k_d * scale
    return DPLogisticRegression(classes=classes, weights=weights, privacy=privacy)
