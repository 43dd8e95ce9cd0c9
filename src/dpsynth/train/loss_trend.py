"""Did the DP arm's training loss fall? A line through its per-step losses, tested against their own scatter.

Why a test and not a share of the first loss: a DP step's loss is read on its own Poisson batch, so it moves by a few
hundredths from step to step whatever the model learns. The rule before 2026-12-06 (warn when the mean of the last
fifth of the steps is not 2% below the first fifth's) flagged gemma-3-270m at learning rate 3e-3 (1.6% over 16 steps)
although that arm's held-out loss fell by 0.065-0.066 nats in two trainings (bench/results/recipe-search/, "The DP
learning rate of gemma-3-270m"). A least-squares slope with its standard error asks the question the warning
means: is there a fall that this run's batch-to-batch noise could not produce?

>>> t = loss_trend([4.0 - 0.01 * i + (0.03 if i % 2 else -0.03) for i in range(16)])
>>> round(t.slope, 2), t.fell
(-0.01, True)
>>> loss_trend([4.0 + (0.03 if i % 2 else -0.03) for i in range(16)]).fell
False
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from scipy import stats

logger = logging.getLogger(__name__)

FALL_P = 0.1
"""A fall counts when the fitted slope is below zero at one-sided p < FALL_P (a t test with n - 2 degrees of
freedom). On the six DP arms of the public skewed-category proxy at eps 4 (16 steps each; their losses are
tests/train/test_loss_trend.py's) it is silent on SmolLM2 at 1e-2 (p 0.002) and Gemma at 3e-3 (p 0.08 and 0.03; the
2% rule flagged the first), and fires on Gemma at 1e-2 (p 0.64; held-out loss -0.001: learned nothing), at 3e-2 (a
rise; held-out +0.42) and at 1e-3 (p 0.51, though its held-out loss fell by 0.052: a fall smaller than 16 batches can
show). The training loss cannot see every fall; bench/heldout_nll.py can, on public data."""

MIN_STEPS = 10
"""Fewer logged losses than this say nothing either way (a line through a handful of noisy batches)."""


@dataclass(frozen=True)
class LossTrend:
    """A least-squares line through the losses: ``slope`` per step, its ``stderr``, the one-sided p-values of a fall
    and of a rise, and the mean loss over the first and last fifth of the steps (for the log line)."""

    steps: int
    slope: float
    stderr: float
    p_fall: float
    p_rise: float
    first: float
    last: float
    window: int

    @property
    def fell(self) -> bool:
        return self.p_fall < FALL_P

    @property
    def rose(self) -> bool:
        return self.p_rise < FALL_P


def loss_trend(losses: list[float]) -> LossTrend:
    """The trend of ``losses`` (at least 3), by :func:`scipy.stats.linregress`: a loss that lies exactly on a line
    gets p 0 or 1 by its slope's sign, a constant one p 0.5 both ways."""
    n = len(losses)
    if n < 3:
        raise ValueError(f"a trend needs at least 3 losses, got {n}")
    fit = stats.linregress(range(n), losses, alternative="less")
    p_fall = float(fit.pvalue)
    k = max(2, n // 5)
    return LossTrend(
        n, float(fit.slope), float(fit.stderr), p_fall, 1.0 - p_fall, sum(losses[:k]) / k, sum(losses[-k:]) / k, k
    )


def warn_if_loss_flat(log: list[dict[str, Any]]) -> bool:
    """Warn (and return True) when the DP arm's training loss shows no fall that its batch-to-batch noise could not
    explain: its noise may have drowned the gradient, and its text read like the base model's, whatever the epsilon
    says. For the operator, who holds the data: a log line, never part of a release.

    >>> warn_if_loss_flat([{"loss": 4.1}] * 20), warn_if_loss_flat([{"loss": 4.1 - 0.05 * i} for i in range(20)])
    (True, False)
    """
    losses = [float(r["loss"]) for r in log if r.get("loss") is not None]
    if len(losses) < MIN_STEPS:
        return False
    t = loss_trend(losses)
    if t.fell:
        return False
    what = "rose" if t.rose else "did not fall by more than its batch-to-batch noise"
    logger.warning(
        "the DP arm's training loss %s (%.3f over its first %d steps, %.3f over its last %d; slope %+.4f +- %.4f per "
        "step, one-sided p of a fall %.2f): DP noise may have drowned the gradient, so its records may read much like "
        "the base model's. A clipping norm below the per-example gradient norms and a larger batch "
        "(bench/dp_snr.py), more privacy units or a larger epsilon help; more epochs do not (bench/results/dp-snr/, "
        "bench/results/recipe-search/). A learning rate too high for the model flattens or raises it too (Adam "
        "moves every weight by about the learning rate each step, noise or not). Over few noisy steps the training "
        "loss can miss a small fall (gemma-3-270m at 1e-3 warned, yet its held-out loss fell): measure on public "
        "data with bench/heldout_nll.py, and judge by the frontier's metrics there (bench/results/recipe-search/, "
        "'The DP learning rate of gemma-3-270m').",
        what,
        t.first,
        t.window,
        t.last,
        t.window,
        t.slope,
        t.stderr,
        t.p_fall,
    )
    return True
