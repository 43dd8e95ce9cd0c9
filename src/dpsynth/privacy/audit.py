"""Empirical lower bounds on epsilon from one training run (Steinke, Nasr and Jagielski 2023).

The audit: ``m`` canaries are each included in the training data independently with probability 1/2. After training,
an attack scores every canary (higher: "looks trained on"). The auditor guesses IN for the ``k+`` highest scores and
OUT for the ``k-`` lowest, abstaining on the rest, and counts ``v`` correct guesses out of ``r = k+ + k-``. Under
(epsilon, delta)-DP, ``v`` is stochastically dominated by ``Binomial(r, e^eps / (1 + e^eps))`` up to a delta term
(their Theorem 5.2 and Algorithm 2):

    P[V >= v] <= P[Bin >= v] + 2 m delta * max_{i=1..v} P[v - i <= Bin < v] / i.

If that p-value is below the significance level, the algorithm is *not* (eps, delta)-DP, with confidence
``1 - significance``; the reported bound is the largest such eps. It is a statistical lower bound: far below the
accountant's upper bound is normal (the attack is weak), above it means a bug.

Two estimators:

* :func:`one_run_audit`: the paper's procedure with ``k+`` and ``k-`` fixed in advance (no search, no correction).
* :func:`epsilon_lower_bound`: the variant of jax_privacy's ``CanaryScoreAuditor.epsilon_one_shot``: guesses are IN
  above a threshold (``k- = 0``); every threshold on the upper convex hull of the ROC curve is tried and the best bound
  kept, with a Bonferroni correction (significance divided by the number of thresholds tried) so that the search
  itself does not inflate the bound. Written from the method's description, not copied.

>>> b = one_run_audit([3.0, 2.5, 2.0, 0.1, 0.0, -1.0] * 50, [True, True, True, False, False, False] * 50,
...                   k_plus=100, k_minus=100, delta=1e-5)
>>> b.num_correct, b.num_guesses, round(b.epsilon, 3)
(200, 200, 4.186)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import binom


@dataclass(frozen=True)
class AuditBound:
    """An epsilon lower bound and the evidence behind it."""

    epsilon: float
    delta: float
    significance: float
    num_canaries: int
    num_guesses: int
    num_correct: int
    method: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Upper bound on P[at least ``v`` of ``r`` guesses correct] under (eps, delta)-DP with ``m`` random canaries."""
    if not (0 <= v <= r <= m):
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    q = float(expit(eps))  # accuracy of eps-DP randomized response
    tail = float(binom.sf(v - 1, r, q))  # P[Bin(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    # P[v - i <= Bin < v] for i = 1..v is the running sum of pmf(v-1), pmf(v-2), ..., pmf(0)
    below = np.cumsum(binom.pmf(np.arange(v - 1, -1, -1), r, q))
    worst = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * worst, 1.0)


def epsilon_from_guesses(m: int, r: int, v: int, *, delta: float, significance: float) -> float:
    """The largest eps whose p-value for ``v`` correct out of ``r`` is still below ``significance`` (0 if none)."""
    if not (0 < significance < 1):
        raise ValueError(f"significance must be in (0, 1), got {significance}")
    if not (0 <= delta <= 1):
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    if r == 0 or p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0

    def gap(eps: float) -> float:
        return p_value(m, r, v, eps, delta) - significance

    # Upper end: the empirical log-odds when some guesses are wrong (the p-value there is about 1/2 or more);
    # for a perfect score, walk up until the p-value reaches the significance level.
    hi = math.log(v / (r - v)) if v < r else 1.0
    lo = 0.0
    while gap(hi) < 0:
        lo, hi = hi, hi + 1.0
        if hi > 200:  # cannot happen: as eps grows, P[Bin(r, expit(eps)) >= v] tends to 1 > significance
            raise ArithmeticError(f"p-value for {v}/{r} correct guesses stays below {significance} up to eps 200")
    return float(brentq(gap, lo, hi, xtol=1e-12, rtol=4 * np.finfo(float).eps, maxiter=200))


def one_run_audit(
    scores: Sequence[float],
    included: Sequence[bool],
    *,
    k_plus: int,
    k_minus: int = 0,
    delta: float,
    significance: float = 0.05,
) -> AuditBound:
    """The paper's audit: IN for the ``k_plus`` highest scores, OUT for the ``k_minus`` lowest, then the bound.

    ``k_plus`` and ``k_minus`` must be chosen before looking at the scores (choosing them by trying several values
    on the same scores would need a correction; :func:`epsilon_lower_bound` does that).
    """
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    m = len(s)
    if s.shape != inc.shape or s.ndim != 1:
        raise ValueError("scores and included must be one-dimensional and of the same length")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > m:
        raise ValueError(f"need k_plus, k_minus >= 0 and k_plus + k_minus <= {m} canaries")
    order = np.argsort(-s, kind="stable")  # highest first
    correct = int(inc[order[:k_plus]].sum()) + int((~inc[order[m - k_minus :]]).sum())
    r = k_plus + k_minus
    eps = epsilon_from_guesses(m, r, correct, delta=delta, significance=significance)
    return AuditBound(eps, delta, significance, m, r, correct, "steinke2023")


def _roc_hull(member: np.ndarray, nonmember: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positive counts of the thresholds on the upper convex hull of the ROC curve.

    A threshold t guesses IN for scores >= t. Thresholds are every distinct score plus +inf. In (false negatives,
    true negatives) coordinates, both increasing with t, a threshold is kept only if it lies strictly above the chord
    of its neighbours: collinear and dominated points add nothing a randomised mix of two hull points cannot do.
    Returned from the highest threshold (fewest guesses) down.
    """
    thresholds = np.append(np.union1d(member, nonmember), np.inf)
    fn = np.searchsorted(np.sort(member), thresholds, side="left")
    tn = np.searchsorted(np.sort(nonmember), thresholds, side="left")
    hull: list[tuple[int, int]] = []
    for point in zip(fn.tolist(), tn.tolist(), strict=True):
        while len(hull) >= 2:
            (ax, ay), (bx, by) = hull[-2], hull[-1]
            if (bx - ax) * (point[1] - ay) - (by - ay) * (point[0] - ax) >= 0:  # not a strict right turn
                hull.pop()
            else:
                break
        hull.append(point)
    pts = np.array(hull[::-1], dtype=np.int64)
    return len(member) - pts[:, 0], len(nonmember) - pts[:, 1]


def epsilon_lower_bound(
    member_scores: Sequence[float],
    nonmember_scores: Sequence[float],
    *,
    delta: float,
    significance: float = 0.05,
) -> AuditBound:
    """One-run epsilon lower bound, searching over thresholds (the jax_privacy ``epsilon_one_shot`` variant).

    Member (included) canaries should score higher. Each hull threshold is a guess set (IN above it, no OUT guesses);
    the significance is split evenly over all hull thresholds (Bonferroni), and the best resulting bound is returned.
    """
    member = np.asarray(member_scores, dtype=np.float64).ravel()
    nonmember = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if member.size == 0 or nonmember.size == 0:
        raise ValueError("need at least one member and one non-member canary score")
    if not (0 < significance < 1):
        raise ValueError(f"significance must be in (0, 1), got {significance}")
    if not (0 < delta <= 1):
        raise ValueError(f"delta must be in (0, 1], got {delta}")
    m = member.size + nonmember.size
    tp, fp = _roc_hull(member, nonmember)
    level = significance / len(tp)
    best = AuditBound(0.0, delta, significance, m, 0, 0, "one_shot_threshold")
    for v, wrong in zip(tp.tolist(), fp.tolist(), strict=True):
        r = v + wrong
        if r == 0:
            continue
        # Along the hull, precision v/r only falls as thresholds drop. Once it is no better than the accuracy
        # expit(best) of best-epsilon randomized response, no later threshold can beat the current bound.
        if v / r <= expit(best.epsilon):
            break
        # Cheap screen: even with delta = 0 this threshold cannot reject epsilon = best, so it cannot improve on it.
        if p_value(m, r, v, best.epsilon, 0.0) > level:
            continue
        eps = epsilon_from_guesses(m, r, v, delta=delta, significance=level)
        if eps > best.epsilon:
            best = AuditBound(eps, delta, significance, m, r, v, "one_shot_threshold")
    return best


def epsilon_lower_bound_from_canaries(
    scores: Sequence[float], included: Sequence[bool], *, delta: float, significance: float = 0.05
) -> AuditBound:
    """:func:`epsilon_lower_bound` for the (scores, included) form: split the scores by inclusion first."""
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    if s.shape != inc.shape or s.ndim != 1:
        raise ValueError("scores and included must be one-dimensional and of the same length")
    return epsilon_lower_bound(s[inc], s[~inc], delta=delta, significance=significance)
