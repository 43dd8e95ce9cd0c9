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
        assert cfg.frontier.eps[0] == 0.0 and "inf" in cfg.frontier.eps
    if cfg.data.schema_ == "yelp":
        assert cfg.data.privacy_unit == "record" and cfg.data.test_path is not None
