"""Configuration of the privacy guarantee, the ledger and the empirical audit."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    max_grad_norm: float = Field(1.0, gt=0)
    accountant: Literal["prv", "rdp"] = "prv"
    histogram_epsilon_fraction: float = Field(
        0.05, gt=0, lt=1, description="share of target_epsilon the control-code histogram may spend on its own"
    )
    histogram_noise_multiplier: float | None = Field(
        None, gt=0, description="explicit sigma of the control-code histogram (overrides the fraction)"
    )

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


class AuditConfig(Section):
    """The one-run audit (Steinke, Nasr and Jagielski 2023)."""

    num_canaries: int = Field(1000, gt=1)
    canary_kind: Literal["random_tokens", "prefix_suffix"] = "random_tokens"
    significance: float = Field(0.05, gt=0, lt=1)
    seed: int = 0
