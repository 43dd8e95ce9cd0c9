"""The DP arm warns its operator when its training loss did not fall (the frontiers' DP rows at ~1,200 units)."""

from __future__ import annotations

import logging

from dpsynth.train.stage import warn_if_loss_flat


def test_a_flat_or_rising_loss_is_flagged_in_the_log(caplog):
    with caplog.at_level(logging.WARNING, logger="dpsynth.train.stage"):
        # the eps-4 Yelp row of 2026-12-01: 4.17 -> 4.19 over 38 steps
        assert warn_if_loss_flat([{"step": i, "loss": 4.17 + 0.02 * i / 37} for i in range(38)])
    assert "did not fall" in caplog.text and "4.172 over its first 7 steps" in caplog.text


def test_a_learning_arm_or_a_short_run_is_not(caplog):
    with caplog.at_level(logging.WARNING, logger="dpsynth.train.stage"):
        # the non-DP Yelp row: 4.03 -> 3.83 (a 5% drop)
        assert not warn_if_loss_flat([{"step": i, "loss": 4.03 - 0.2 * i / 37} for i in range(38)])
        assert not warn_if_loss_flat([{"step": i, "loss": 4.1} for i in range(5)])  # too few steps to tell
        assert not warn_if_loss_flat([{"step": i} for i in range(20)])  # steps without a loss (no batch)
    assert caplog.text == ""
