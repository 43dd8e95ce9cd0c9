"""The examples in the data modules' docstrings are tests too (pytest does not collect doctests by default)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "categories",
    "canaries",
    "clean",
    "demo",
    "fingerprint",
    "format",
    "prepare",
    "readers",
    "records",
    "schemas",
    "units",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"dpsynth.data.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
