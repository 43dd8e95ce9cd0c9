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


def _crash_at(cfg, out, step, native, monkeypatch, *, resume):
    with monkeypatch.context() as m:
        m.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
        _crash_after(m, step)
        with pytest.raises(_Crash):
            api.train(cfg, out, resume=resume, progress=False)


BF16 = {"weights": "bfloat16", "autocast": "bfloat16"}
F32 = {"weights": "float32", "autocast": None}


def test_a_resume_in_other_arithmetic_warns_and_keeps_every_stretch(tmp_path, tiny_model_dir, monkeypatch, caplog):
    """Steps 1-2 on a machine with native bf16, 3 on one without, then 4 on that one again: the second resume
    compares with the last stretch (no warning), and the record still names the first."""
    cfg = _cfg(tiny_model_dir, "model.device=cpu", "train.arms=[dp]", "generate.arms=[dp]")
    api.prepare(cfg, tmp_path)
    run = RunDir(tmp_path)
    _crash_at(cfg, tmp_path, 2, True, monkeypatch, resume=False)
    assert read_json(run.checkpoints("dp") / "meta.json")["arithmetic"] == [{**BF16, "from_step": 0}]

    with caplog.at_level(logging.WARNING, logger="dpsynth.train.precision"):
        _crash_at(cfg, tmp_path, 3, False, monkeypatch, resume=True)
    assert "since step 0 with bfloat16 weights" in caplog.text and "privacy accounting is unaffected" in caplog.text
    stretches = [{**BF16, "from_step": 0}, {**F32, "from_step": 2}]
    assert read_json(run.checkpoints("dp") / "meta.json")["arithmetic"] == stretches

    caplog.clear()
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="dpsynth.train.precision"):
        api.train(cfg, tmp_path, resume=True, progress=False)
    assert "privacy accounting" not in caplog.text  # the same arithmetic as the last stretch
    assert read_json(run.privacy_json("dp"))["arithmetic"] == {**F32, "stretches": stretches}


def test_a_resume_in_the_same_arithmetic_says_nothing(tmp_path, tiny_model_dir, monkeypatch, caplog):
    cfg = _cfg(tiny_model_dir, "model.device=cpu", "train.arms=[dp]", "generate.arms=[dp]")
    api.prepare(cfg, tmp_path)
    _crash_at(cfg, tmp_path, 2, True, monkeypatch, resume=False)
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level(logging.WARNING, logger="dpsynth.train.precision"):
        api.train(cfg, tmp_path, resume=True, progress=False)
    assert "privacy accounting" not in caplog.text
    assert read_json(RunDir(tmp_path).privacy_json("dp"))["arithmetic"] == BF16


def test_a_checkpoint_of_an_earlier_dpsynth_counts_its_steps_as_unknown(tmp_path, tiny_model_dir, monkeypatch):
    from dpsynth.rundir import write_json

    cfg = _cfg(tiny_model_dir, "model.device=cpu", "train.arms=[dp]", "generate.arms=[dp]")
    api.prepare(cfg, tmp_path)
    _crash_at(cfg, tmp_path, 2, True, monkeypatch, resume=False)
    meta_path = RunDir(tmp_path).checkpoints("dp") / "meta.json"
    meta = read_json(meta_path)
    del meta["arithmetic"]  # as an earlier dpsynth wrote it
    write_json(meta_path, meta)
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    api.train(cfg, tmp_path, resume=True, progress=False)
    unknown = {"weights": "unknown", "autocast": "unknown", "from_step": 0}
    assert read_json(RunDir(tmp_path).privacy_json("dp"))["arithmetic"] == {
        **BF16,
        "stretches": [unknown, {**BF16, "from_step": 2}],
    }
