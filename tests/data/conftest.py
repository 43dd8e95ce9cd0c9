"""Fixtures of the prepare-stage tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.data.files import WRITERS


@pytest.fixture()
def write_rows(tmp_path: Path) -> Callable[..., Path]:
    """``write_rows(name, rows)``: a file in ``tmp_path`` in the format its name says (``.gz``: compressed)."""

    def _write(name: str, rows: Sequence[dict[str, Any]]) -> Path:
        fmt = name.removesuffix(".gz").rsplit(".", 1)[1]
        return WRITERS[fmt](tmp_path / name, rows)

    return _write
