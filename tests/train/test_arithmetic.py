"""``privacy.json`` and checkpoints say what arithmetic training ran in, and a resume in other arithmetic warns.

``model.dtype=auto`` and ``train.precision=auto`` resolve by processor (bf16 weights under bf16 autocast where the CPU
has native bf16, float32 where it has not), so one config can train differently on two machines; a resume on the
other kind of machine is allowed (the privacy accounting does not depend on it) but must not pass unremarked.
"""

from __future__ import annotations

import logging

import pytest

from dpsynth import api
from dpsynth.rundir import RunDir, read_json
from dpsynth.train import precision as precision_module
from tests.train.test_stage import _cfg, _Crash, _crash_after


@pytest.mark.parametrize(
    ("native", "extra", "weights", "autocast"),
    [
        (True, [], "bfloat16", "bfloat16"),
        (False, [], "float32", None),
        (True, ["train.precision=float32"], "float32", None),
        (True, ["model.dtype=float32"], "float32", "bfloat16"),
    ],
)
def test_privacy_json_records_the_arithmetic_each_arm_ran_in(
    tmp_path, tiny_model_dir, monkeypatch, native, extra, weights, autocast
):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    cfg = _cfg(tiny_model_dir, "model.device=cpu", "train.max_steps=2", *extra)
    api.prepare(cfg, tmp_path)
    api.train(cfg, tmp_path, progress=False)
    for arm in ("dp", "no_dp"):
        assert read_json(RunDir(tmp_path).privacy_json(arm))["arithmetic"] == {"weights": weights, "autocast": autocast}


def test_a_resume_in_other_arithmetic_warns_and_is_recorded(tmp_path, tiny_model_dir, monkeypatch, caplog):
    cfg = _cfg(tiny_model_dir, "model.device=cpu", "train.arms=[dp]", "generate.arms=[dp]")
    api.prepare(cfg, tmp_path)
    run = RunDir(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(precision_module, "cpu_has_native_bf16", lambda: True)  # a machine with native bf16
        _crash_after(m, 2)
        with pytest.raises(_Crash):
            api.train(cfg, tmp_path, progress=False)
    made = read_json(run.checkpoints("dp") / "meta.json")["arithmetic"]
    assert made == {"weights": "bfloat16", "autocast": "bfloat16"}

    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)  # resumed on one without
    with caplog.at_level(logging.WARNING, logger="dpsynth.train.precision"):
        api.train(cfg, tmp_path, resume=True, progress=False)
    assert "ran its 2 steps with bfloat16 weights" in caplog.text and "privacy accounting is unaffected" in caplog.text
    assert read_json(run.privacy_json("dp"))["arithmetic"] == {
        "weights": "float32",
        "autocast": None,
        "resumed_from": made,
        "resumed_at": 2,
    }


def test_a_resume_in_the_same_arithmetic_says_nothing(tmp_path, tiny_model_dir, monkeypatch, caplog):
    cfg = _cfg(tiny_model_dir, "model.device=cpu", "train.arms=[dp]", "generate.arms=[dp]")
    api.prepare(cfg, tmp_path)
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(_Crash):
            api.train(cfg, tmp_path, progress=False)
    with caplog.at_level(logging.WARNING, logger="dpsynth.train.precision"):
        api.train(cfg, tmp_path, resume=True, progress=False)
    assert "arithmetic" not in caplog.text and "autocast" not in caplog.text
    assert set(read_json(RunDir(tmp_path).privacy_json("dp"))["arithmetic"]) == {"weights", "autocast"}
