"""Errors that dpsynth reports to a user, as opposed to bugs.

Every error a user can fix by changing their input or configuration derives from :class:`DPSynthError`; the CLI
prints its message (never a traceback) and exits non-zero. Messages name the file, line and field involved, and never
quote the content of a private record: only positions and field names, which are not private.
"""

from __future__ import annotations

from pathlib import Path


class DPSynthError(Exception):
    """Base class for every error the CLI reports as a plain message with a non-zero exit code."""

    exit_code = 2


class InputError(DPSynthError):
    """Bad input data: a missing file, a malformed line, a missing field, no usable records.

    >>> str(InputError("not valid JSON", path="reviews.jsonl", line=3))
    'reviews.jsonl:3: not valid JSON'
    >>> str(InputError("field is missing", path="r.csv", field="reviewText"))
    "r.csv: field 'reviewText': field is missing"
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
        parts = [p for p in (where, f"field {field!r}" if field else "") if p]
        super().__init__(": ".join([*parts, message]))


class ConfigError(DPSynthError):
    """An invalid configuration value or override (names the key)."""


class BudgetExceededError(DPSynthError):
    """A release would spend more privacy budget than its source has left."""

    exit_code = 3


class PrivacyCheckError(DPSynthError):
    """A post-training privacy or correctness check failed (e.g. LoRA weights did not change)."""

    exit_code = 4
