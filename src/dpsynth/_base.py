"""The base class of every configuration model: strict, so that a typo in a key is an error, not a silent default."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A configuration section. Unknown keys are refused (a misspelt privacy setting must never be ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
