"""The docstring examples of the metric modules are part of their documentation: run them."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["describe", "fidelity", "utility", "dp_logreg", "quality", "text_privacy", "mia", "exposure"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"dpsynth.evaluate.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"dpsynth.evaluate.{name} has no examples"
    assert result.failed == 0
