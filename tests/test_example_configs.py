"""Every YAML config shipped in examples/ and bench/ is a valid configuration (a typo there would fail a user)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpsynth.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted([*ROOT.glob("examples/*.yaml"), *ROOT.glob("bench/*.yaml")])


def test_there_are_configs_to_check():
    assert {p.name for p in CONFIGS} >= {"frontier_yelp.yaml", "frontier_amazon_cellphones.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    cfg = load_config(path)
    if "frontier" in path.name:
        assert cfg.frontier.eps[0] == 0.0  # every sweep has its floor
        if cfg.generator == "pe":
            assert "inf" not in cfg.frontier.eps  # refused at the start of a PE sweep
        if path.name in ("frontier_yelp.yaml", "frontier_amazon_cellphones.yaml"):
            assert cfg.frontier.eps == [0.0, 1.0, 4.0, 8.0, "inf"]  # the full fine-tuning sweeps
    if cfg.data.schema_ == "yelp":
        assert cfg.data.privacy_unit == "record" and cfg.data.test_path is not None
