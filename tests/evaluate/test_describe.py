from __future__ import annotations

import pytest

from dpsynth.evaluate.describe import all_descriptions, describe


def test_every_metric_has_a_definition_and_direction():
    table = all_descriptions()
    assert {"length_kl", "mauve", "tstr_accuracy", "quality_gibberish", "canary_leakage", "mia_auc", "exposure"} <= set(
        table
    )
    for info in table.values():
        assert len(info.definition) > 20
        assert info.better in ("higher", "lower", "closer to reference", "informative")
    assert describe("mauve").better == "higher"
    assert describe("length_wasserstein").to_json()["better"] == "lower"
    with pytest.raises(KeyError, match="nope"):
        describe("nope")
