"""Configuration of Private Evolution (``generator: pe``): population sizes, iterations, variations, selection.

The guarantee (``privacy.target_epsilon`` or ``privacy.noise_multiplier``, ``privacy.delta``, the accountant and the
share of the control-code release) is read from the ``privacy`` section, as for DP fine-tuning, so the same
configuration means the same (epsilon, delta) whichever generator runs. Sampling (engine, temperature, top-p,
``max_new_tokens``, seed) is the ``generate`` section's; ``generate.num_records`` is the number of records PE writes
unless ``pe.candidates`` says otherwise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dpsynth._base import Section


class PEConfig(Section):
    """Aug-PE (Xie et al. 2024): random samples from the model, DP nearest-neighbour votes, variations of the winners.

    Cost: ``N (1 + L)`` random generations, then ``N L`` variations in each of the ``T - 1`` later iterations
    (``N = pe.candidates``, ``L = pe.variations``, ``T = pe.iterations``); each iteration is one Gaussian release.
    """

    iterations: int = Field(2, ge=1, description="T: DP vote histograms (each one Gaussian release, composed)")
    variations: int = Field(2, ge=1, description="L: variations asked of the model per selected sample")
    candidates: int | None = Field(
        None, gt=0, description="N: samples selected per iteration, and written at the end (none: generate.num_records)"
    )
    initial_factor: float = Field(
        1.0, gt=0, description="the first population is initial_factor * N * (1 + L) random samples from the model"
    )
    selection: Literal["rank", "sample"] = Field(
        "rank", description="rank: the top noisy counts of each code cell; sample: draws proportional to them"
    )
    threshold: float = Field(
        0.0,
        ge=0,
        description="noisy counts at or below threshold * sigma count as no vote (post-processing); rank selection "
        "keeps the top anyway, sampling draws only above it",
    )
    variation: Literal["paraphrase", "blanks"] = Field(
        "paraphrase", description="paraphrase the sample, or fill in its blanked words (Aug-PE's blank prompt)"
    )
    blank_probability: float = Field(0.5, gt=0, lt=1, description="share of words blanked (variation=blanks)")
    length_std: float | None = Field(
        10.0,
        ge=0,
        description="Aug-PE's adaptive length: ask for the parent's word count plus N(0, length_std^2) words "
        "(none: no length in the prompt)",
    )
    min_words: int = Field(10, ge=1, description="the shortest length a variation prompt asks for")
    embed_batch_size: int = Field(64, gt=0)
    noise_seed: int | None = Field(
        None, description="seed of the vote and code-release noise; none (default) draws fresh OS entropy per run"
    )
