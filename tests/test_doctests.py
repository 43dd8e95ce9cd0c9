"""Docstring examples are documentation that must stay true: run every module's (pytest does not by default)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dpsynth

MODULES = sorted(m.name for m in pkgutil.walk_packages(dpsynth.__path__, prefix="dpsynth."))


def test_the_package_has_modules_with_examples():
    with_examples = [
        name
        for name in MODULES
        if doctest.DocTestFinder().find(importlib.import_module(name))
        and any(t.examples for t in doctest.DocTestFinder().find(importlib.import_module(name)))
    ]
    assert len(with_examples) >= 20, with_examples


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
