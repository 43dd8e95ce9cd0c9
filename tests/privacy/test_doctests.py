"""The docstring examples of the privacy modules are part of their documentation: run them."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["accounting", "mechanisms", "ledger", "files", "audit"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"dpsynth.privacy.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"dpsynth.privacy.{name} has no examples"
    assert result.failed == 0
