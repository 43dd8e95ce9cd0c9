"""Configuration of the ``evaluate`` stage."""

from __future__ import annotations

from pydantic import Field

from dpsynth._base import Section


class EvaluateConfig(Section):
    """Which metrics to compute and how big their samples are."""

    max_records: int = Field(500, gt=0, description="records per arm (and of real data) used by each metric")
    seed: int = 0
    llm_classifier: bool = Field(False, description="slow: fine-tune the base LLM as a rating classifier")
