"""Fixtures of the metric tests: the embedding model, loaded once per session (it takes a few seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedder():
    from dpsynth.evaluate.embeddings import load_embedder

    return load_embedder("cpu")
