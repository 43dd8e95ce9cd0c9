"""Configuration of the privacy guarantee, the ledger and the empirical audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from dpsynth._base import Section


class PrivacyConfig(Section):
    """The (epsilon, delta) target of the DP arm and how it is met.

    Give either ``target_epsilon`` (the noise multiplier is calibrated so that everything the release does, DP-SGD and
    the control-code histogram composed, stays at or under it) or ``noise_multiplier`` (the epsilon that results is
    reported), not both.
    """

    target_epsilon: float | None = Field(8.0, gt=0)
    noise_multiplier: float | None = Field(None, gt=0)
    delta: float | None = Field(None, gt=0, lt=1, description="default: min(1e-5, 1/(10 n)), below 1/n")
    max_grad_norm: float = Field(
        0.1,
        gt=0,
        description="per-example clipping norm C. 0.1 (Li et al. 2022) sits below every per-example LoRA gradient "
        "norm measured on the public proxy (median 0.19, 10th percentile 0.15: bench/results/dp-snr), so each example "
        "contributes its gradient's direction at norm C; at 1.0 nothing was clipped, and the noise (which scales with "
        "C) grew 10x while the signal grew 2x: a 5x lower signal-to-noise per step",
    )
    accountant: Literal["prv", "rdp"] = "prv"
    histogram_epsilon_fraction: float = Field(
        0.05, gt=0, lt=1, description="share of target_epsilon the control-code histogram may spend on its own"
    )
    length_epsilon_fraction: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="with data.max_tokens=auto: share of target_epsilon the length histogram may spend on its own "
        "(dpsynth.privacy.length)",
    )
    histogram_noise_multiplier: float | None = Field(
        None, gt=0, description="explicit sigma of the control-code histogram (overrides the fraction)"
    )
    code_release: Literal["marginals", "joint"] = Field(
        "marginals",
        description="how the control-code distribution is released: one histogram per code (marginals, default: the "
        "tail survives at small n; codes are then drawn independently) or the joint histogram of every combination",
    )

    @model_validator(mode="before")
    @classmethod
    def _noise_replaces_default_target(cls, data: Any) -> Any:
        """``privacy.noise_multiplier=0.3`` alone means "no target": the default target gives way to it."""
        if isinstance(data, dict) and data.get("noise_multiplier") is not None and "target_epsilon" not in data:
            return {**data, "target_epsilon": None}
        return data

    @model_validator(mode="after")
    def _one_of(self) -> PrivacyConfig:
        if self.target_epsilon is not None and self.noise_multiplier is not None:
            raise ValueError("give privacy.target_epsilon or privacy.noise_multiplier, not both")
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("give privacy.target_epsilon or privacy.noise_multiplier")
        return self


class LedgerConfig(Section):
    """Where the privacy ledger lives (default: the user's data directory; env ``DPSYNTH_LEDGER`` overrides)."""

    path: Path | None = None
    enabled: bool = True
    source_epsilon_budget: float | None = Field(
        None, gt=0, description="budget given to a source the first time it is seen (none: no limit until set)"
    )
    source_delta_budget: float | None = Field(None, gt=0, lt=1)


AuditArm = Literal["dp", "no_dp"]


def _both_arms() -> list[AuditArm]:
    return ["dp", "no_dp"]


class AuditConfig(Section):
    """The one-run audit (Steinke, Nasr and Jagielski 2023), run by ``dpsynth audit``.

    The DP arm of the audit trains exactly as the run is configured (that is what is audited); only the no-DP arm,
    whose job is to show that the audit can detect memorization at all, may train longer (``no_dp_epochs``).
    """

    num_canaries: int = Field(1000, gt=1)
    canary_kind: Literal["random_tokens", "prefix_suffix"] = "random_tokens"
    significance: float = Field(0.05, gt=0, lt=1)
    seed: int = 0
    canary_tokens: int = Field(
        16, gt=0, description="random words (one vocabulary token each) per canary, or per suffix for prefix_suffix"
    )
    k_plus: int | None = Field(None, ge=0, description="IN guesses on the most confident canaries (none: m/10)")
    k_minus: int | None = Field(None, ge=0, description="OUT guesses on the least confident canaries (none: m/10)")
    arms: list[AuditArm] = Field(default_factory=_both_arms, description="the audit's arms (DP: audited; no-DP: power)")
    no_dp_epochs: float | None = Field(
        None, gt=0, description="epochs of the audit's no-DP arm, ignoring train.max_steps (none: as the run)"
    )
    score_batch_size: int = Field(16, gt=0, description="canaries per forward pass when scoring")

    @model_validator(mode="after")
    def _guesses_fit(self) -> AuditConfig:
        k_plus = self.k_plus if self.k_plus is not None else default_guesses(self.num_canaries)
        k_minus = self.k_minus if self.k_minus is not None else default_guesses(self.num_canaries)
        if k_plus + k_minus > self.num_canaries:
            raise ValueError(f"audit.k_plus + audit.k_minus ({k_plus} + {k_minus}) exceed audit.num_canaries")
        if k_plus + k_minus == 0:
            raise ValueError("audit.k_plus and audit.k_minus are both 0: the audit would make no guess")
        return self


def default_guesses(num_canaries: int) -> int:
    """Guesses on each side when not configured: a tenth of the canaries, abstaining on the middle 80%.

    Why a tenth: the bound needs both many guesses (a perfect attack on ``r`` guesses can certify at most about
    ``log(r)``) and confident ones (the middle of the score ranking is close to a coin flip, and wrong guesses cost
    more than abstentions). With m = 1000, 100 + 100 correct guesses certify epsilon ~4.2 at 95% and delta 1e-5.

    >>> default_guesses(1000), default_guesses(40), default_guesses(5)
    (100, 4, 1)
    """
    return max(1, round(num_canaries / 10))
