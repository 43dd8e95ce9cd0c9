"""MAUVE over draws (:mod:`dpsynth.evaluate.mauve_metric`): what a draw is, and what the mean and spread report."""

from __future__ import annotations

import numpy as np
import pytest

from dpsynth.evaluate.mauve_metric import MauveDraws, mauve_over_draws, mauve_score


def test_each_draw_is_an_equal_size_seeded_sample_with_its_own_kmeans_seed():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(90, 6)).astype(np.float32)
    q = (rng.normal(size=(50, 6)) + 0.5).astype(np.float32)
    draws = mauve_over_draws(p, q, repeats=3, seed=7)
    assert draws.n == 50 and len(draws.values) == 3
    for i, value in enumerate(draws.values):
        pick = np.random.default_rng(7 + i)
        a, b = p[pick.choice(90, 50, replace=False)], q[pick.choice(50, 50, replace=False)]
        assert value == pytest.approx(mauve_score(a, b, seed=25 + i))
    assert draws.mean == pytest.approx(np.mean(draws.values))
    assert draws.sd == pytest.approx(np.std(draws.values, ddof=1)) and draws.sd > 0
    assert mauve_over_draws(p, q, repeats=3, seed=7) == draws  # reproducible


def test_one_draw_has_no_spread_and_bad_input_is_refused():
    assert MauveDraws((0.5,), 10).sd is None and MauveDraws((0.4, 0.6), 10).sd == pytest.approx(np.sqrt(0.02))
    p = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="repeats"):
        mauve_over_draws(p, p, repeats=0, seed=0)
    with pytest.raises(ValueError, match="two feature vectors"):
        mauve_over_draws(p[:1], p, repeats=1, seed=0)


def test_faiss_says_nothing_on_stderr_and_the_score_is_the_same(capfd, monkeypatch):
    """MAUVE's n/10 buckets always trip faiss's "please provide at least N training points" (C-level stderr); with
    the bound lowered for MAUVE's k-means the line is gone and the clusters, hence the score, are unchanged."""
    import contextlib
    import importlib

    from dpsynth.evaluate import mauve_metric

    cm = importlib.import_module("mauve.compute_mauve")

    rng = np.random.default_rng(3)
    p = rng.normal(size=(100, 8)).astype(np.float32)
    q = (rng.normal(size=(100, 8)) + 0.3).astype(np.float32)
    faiss = cm.faiss
    capfd.readouterr()
    quiet = mauve_score(p, q)
    assert "WARNING clustering" not in capfd.readouterr().err
    assert cm.faiss is faiss  # restored
    monkeypatch.setattr(mauve_metric, "quiet_kmeans", contextlib.nullcontext)
    loud = mauve_score(p, q)
    assert "WARNING clustering 200 points to 10 centroids" in capfd.readouterr().err  # what the test would catch
    assert quiet == loud
