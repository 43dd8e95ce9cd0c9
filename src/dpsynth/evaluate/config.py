"""Configuration of the ``evaluate`` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dpsynth._base import Section


class EvaluateConfig(Section):
    """Which metrics to compute and how big their samples are."""

    max_records: int = Field(500, gt=0, description="records per arm (and of real data) used by each metric")
    seed: int = 0
    llm_classifier: bool = Field(
        False, description="slow: also fine-tune the base LLM (LoRA, no DP) as a classifier per training source"
    )
    llm_classifier_tasks: list[str] | None = Field(
        None, description="control codes the LLM classifier predicts (when present); none: the label code (data.label)"
    )
    llm_classifier_epochs: int = Field(2, gt=0, description="epochs of each LLM classifier's fine-tuning")
    llm_classifier_learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate of the LLM classifier")
    llm_classifier_batch_size: int = Field(8, gt=0, description="rows per step of the LLM classifier")
    mauve_repeats: int = Field(
        5,
        ge=1,
        description="draws MAUVE is averaged over (equal-size subsamples, k-means seeds): its mean and sd are reported",
    )
    length_bins: int = Field(20, gt=1, description="shared histogram bins of the length-in-tokens KL")
    unigram_top_k: int = Field(1000, gt=0, description="vocabulary (real side's most frequent words) of the unigram KL")
    ngram_n: int = Field(8, gt=0, description="word n-gram length of the verbatim-overlap check")
    exposure_candidates: int = Field(
        100,
        gt=0,
        lt=1_000_000,
        description="random secrets each canary is ranked among (exposure is capped at log2 of this + 1)",
    )
    exposure_canaries: int = Field(
        10, ge=0, description="canaries whose exposure is estimated, per arm (each costs ~6 tokens x candidates)"
    )
    mia_max_records: int = Field(
        100, gt=1, description="training units (members) and test units (non-members) scored by the MIA, each"
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="arithmetic of the LM scoring (membership inference, canary exposure): auto scores as training "
        "ran (train.precision: bfloat16 weights under bf16 autocast where training runs so, e.g. a CPU with native "
        "bf16, or CUDA); float32 for float32 scores, in about 1.7x the time on such a CPU. On the demo the bf16 "
        "scores moved each attack's AUC by at most 0.003 (bench/results/mia-precision-2026-12-05/)",
    )
    score_batch_tokens: int = Field(
        1024, gt=0, description="tokens (rows x longest row) per forward pass when scoring with the LM"
    )
    num_samples: int = Field(10, ge=0, description="synthetic texts per arm shown in metrics.json (never near-copies)")
    utility_dp_epsilon: float | None = Field(
        None, gt=0, description="epsilon of the DP logistic-regression baseline (default: the DP arm's epsilon)"
    )
    utility_dp_lambda: float = Field(1e-2, gt=0, description="L2 regularisation of the DP logistic-regression baseline")
    top_features: int = Field(50, gt=0, description="top TF-IDF terms per model in the feature-importance comparison")
