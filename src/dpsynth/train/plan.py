"""The privacy plan of a DP training run, fixed before any private example is touched.

Everything the DP arm releases is planned here: DP-SGD (noise multiplier, sample rate, steps, clipping norm), the
Gaussian histogram of control codes that generation samples from and, with ``data.max_tokens=auto``, the histogram of
response lengths that chose the length bound (:mod:`dpsynth.privacy.length`, released before training: its noise is
fixed here, from the same target). All are composed in one accountant (:mod:`dpsynth.privacy.accounting`), so the
target epsilon covers the whole release. The plan is stored in every
checkpoint; a resume must find the same plan, so a changed config can never silently change what was accounted.

What the plan reads from the private data is only its size ``n`` (the number of privacy units), used for the sample
rate and the default delta, as is standard for DP-SGD.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dpsynth.config import Config
from dpsynth.errors import ConfigError
from dpsynth.privacy.accounting import (
    Mechanism,
    calibrate_noise_multiplier,
    default_delta,
    dp_sgd_mechanism,
    epsilon,
    histogram_mechanism,
    histogram_noise_for_epsilon,
)
from dpsynth.privacy.length import length_mechanism
from dpsynth.train.batching import sample_rate, total_steps

DEFAULT_HISTOGRAM_SIGMA = 10.0
"""Histogram noise when ``privacy.noise_multiplier`` is given without a target epsilon (alone: epsilon ~0.5 at 1e-5)."""


@dataclass(frozen=True)
class PrivacyPlan:
    """What the DP arm will do, and the guarantee that results if it runs to the end."""

    n: int
    expected_batch_size: int
    sample_rate: float
    steps: int
    noise_multiplier: float
    max_grad_norm: float
    histogram_sigma: float
    histogram_cells: int
    delta: float
    accountant: str
    target_epsilon: float | None
    length_sigma: float = 0.0  # the length-bound histogram's noise (data.max_tokens=auto); 0: no such release
    length_grid: tuple[int, ...] = ()
    # the released counts and bound themselves: a resume on data prepared again (a second draw) is refused
    length_counts: tuple[float, ...] = ()
    length_bound: int = 0

    def mechanisms(self, steps_done: int | None = None) -> list[Mechanism]:
        """The mechanisms of the release after ``steps_done`` DP-SGD steps (default: all planned steps)."""
        steps = self.steps if steps_done is None else steps_done
        out = [histogram_mechanism(self.histogram_sigma, self.histogram_cells), *self._length()]
        if steps > 0:
            out.append(dp_sgd_mechanism(self.noise_multiplier, self.sample_rate, steps, self.max_grad_norm))
        return out

    def _length(self) -> list[Mechanism]:
        return [length_mechanism(self.length_sigma, self.length_grid)] if self.length_sigma > 0 else []

    def epsilon(self, steps_done: int | None = None) -> float:
        """Epsilon of the histogram and ``steps_done`` DP-SGD steps composed, by the configured accountant."""
        return epsilon(self.mechanisms(steps_done), self.delta, self.accountant)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        # a resume compares this with a checkpoint's JSON: the grid as the list JSON reads back, and no length keys
        # without a length release, so that checkpoints written before it existed still resume
        out = {**asdict(self), "length_grid": list(self.length_grid), "length_counts": list(self.length_counts)}
        if self.length_sigma == 0:
            for key in ("length_sigma", "length_grid", "length_counts", "length_bound"):
                del out[key]
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PrivacyPlan:
        # plans stored before the length release existed have neither key: they had no such release
        tuples = {key: tuple(obj.get(key, ())) for key in ("length_grid", "length_counts")}
        return cls(**{**obj, **tuples})


def plan_delta(cfg: Config, n: int) -> float:
    """The delta of every release of the DP arm: ``privacy.delta`` or :func:`default_delta` of ``n`` units."""
    delta = cfg.privacy.delta if cfg.privacy.delta is not None else default_delta(n)
    if delta >= 1.0 / n:
        raise ConfigError(f"privacy.delta={delta:g} must be below 1/n = {1.0 / n:g} for n={n} training units")
    return delta


def length_sigma(cfg: Config, n: int) -> float:
    """The noise of the length-bound histogram (``data.max_tokens=auto``): ``privacy.length_epsilon_fraction`` of the
    target alone, or the fixed :data:`DEFAULT_HISTOGRAM_SIGMA` when the DP-SGD noise is given instead of a target."""
    p = cfg.privacy
    if p.target_epsilon is None:
        return DEFAULT_HISTOGRAM_SIGMA
    return histogram_noise_for_epsilon(p.length_epsilon_fraction * p.target_epsilon, plan_delta(cfg, n), p.accountant)


def make_plan(
    cfg: Config, *, n: int, histogram_cells: int, length_release: Mapping[str, Any] | None = None
) -> PrivacyPlan:
    """Calibrate the noise of the DP arm for ``n`` training units (privacy units).

    ``length_release``: ``prepare.json``'s record of a DP length bound (:mod:`dpsynth.privacy.length`), whose
    mechanism is composed with the rest; an exact or public bound (sigma 0) adds nothing.
    """
    p, t = cfg.privacy, cfg.train
    q = sample_rate(t.batch_size, n)
    steps = total_steps(n=n, expected_batch_size=t.batch_size, epochs=t.epochs, max_steps=t.max_steps)
    delta = plan_delta(cfg, n)
    length = length_release or {}
    len_sigma = float(length.get("sigma") or 0.0)
    len_grid = tuple(int(g) for g in length.get("grid", ())) if len_sigma > 0 else ()
    len_counts = tuple(float(c) for c in length.get("noisy_counts", ())) if len_sigma > 0 else ()
    len_bound = int(length.get("max_tokens", 0)) if len_sigma > 0 else 0
    fixed_length = [length_mechanism(len_sigma, len_grid)] if len_sigma > 0 else []
    if p.histogram_noise_multiplier is not None:
        hist_sigma = p.histogram_noise_multiplier
    elif p.target_epsilon is not None:
        hist_sigma = histogram_noise_for_epsilon(p.histogram_epsilon_fraction * p.target_epsilon, delta, p.accountant)
    else:  # an explicit DP-SGD noise multiplier and no target: a fixed, documented histogram noise
        hist_sigma = DEFAULT_HISTOGRAM_SIGMA
    if p.target_epsilon is not None:
        sigma = calibrate_noise_multiplier(
            target_epsilon=p.target_epsilon,
            delta=delta,
            sample_rate=q,
            steps=steps,
            accountant=p.accountant,
            fixed=[histogram_mechanism(hist_sigma, histogram_cells), *fixed_length],
        )
    else:
        assert p.noise_multiplier is not None  # the config validator guarantees one of the two
        sigma = p.noise_multiplier
    return PrivacyPlan(
        n=n,
        expected_batch_size=t.batch_size,
        sample_rate=q,
        steps=steps,
        noise_multiplier=sigma,
        max_grad_norm=p.max_grad_norm,
        histogram_sigma=hist_sigma,
        histogram_cells=histogram_cells,
        delta=delta,
        accountant=p.accountant,
        target_epsilon=p.target_epsilon,
        length_sigma=len_sigma,
        length_grid=len_grid,
        length_counts=len_counts,
        length_bound=len_bound,
    )
