"""The LM scoring of the privacy attacks runs in training's arithmetic (``evaluate.precision``), and bf16 scores stay
close to float32 ones.

Where training runs under bf16 autocast on bfloat16 weights (a CPU with native bf16, CUDA), ``evaluate.precision=auto``
scores the same way: the loss training minimised, in about half the float32 time. ``float32`` must give float32 scores
everywhere (also on CUDA, where ``model.dtype=auto`` alone means bfloat16).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from dpsynth.config import load_config
from dpsynth.evaluate import model_privacy as mp_module
from dpsynth.evaluate.collect import MetricList
from dpsynth.train import precision as precision_module
from tests.privacy.test_warm_reference import SMALL, trained_run


@pytest.mark.parametrize(
    ("native", "overrides", "dtype", "autocast"),
    [
        (True, [], "bfloat16", torch.bfloat16),  # auto = as training: bf16 weights under bf16 autocast
        (False, [], "auto", None),  # no native bf16: training stays float32, so does scoring
        (True, ["evaluate.precision=float32"], "float32", None),
        (True, ["train.precision=float32"], "auto", None),  # auto follows the training's own choice (float32 here)
        (False, ["evaluate.precision=bfloat16"], "bfloat16", torch.bfloat16),  # asked for: slow, but honoured
        (True, ["model.dtype=float32"], "float32", torch.bfloat16),  # an explicit model.dtype is kept
    ],
)
def test_scoring_setup_follows_training_unless_told(monkeypatch, native, overrides, dtype, autocast):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    cfg = load_config(None, ["model.device=cpu", *overrides])
    model_cfg, device, cast = mp_module.scoring_setup(cfg)
    assert (model_cfg.dtype, device.type, cast) == (dtype, "cpu", autocast)
    assert cfg.model.dtype == ("float32" if "model.dtype=float32" in overrides else "auto")  # the config is untouched


@pytest.mark.parametrize(
    ("overrides", "dtype", "autocast"),
    [
        ([], "auto", torch.bfloat16),  # CUDA: model.dtype=auto is bf16 already, training adds autocast
        (["train.precision=float32"], "auto", None),  # as that training ran: bf16 weights, no autocast
        (["evaluate.precision=float32"], "float32", None),  # asked for float32: float32 weights, not CUDA's bf16
    ],
)
def test_scoring_setup_on_cuda(monkeypatch, overrides, dtype, autocast):
    from dpsynth.models import loader

    monkeypatch.setattr(loader, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    model_cfg, device, cast = mp_module.scoring_setup(load_config(None, overrides))
    assert (model_cfg.dtype, device.type, cast) == (dtype, "cuda", autocast)


def test_bf16_scores_stay_near_float32_and_say_how_they_were_made(tmp_path, tiny_model_dir, monkeypatch, caplog):
    # LoRA on the top block only (the tiny model has 2): the block below is shared by the three models, as in the demo
    cfg = load_config(None, [f"model.name={tiny_model_dir}", "model.device=cpu", *SMALL, "train.lora.top_k_layers=1"])
    run, inputs = trained_run(cfg, tmp_path / "run")

    seen: dict[str, list[np.ndarray]] = {}
    loaded: dict[str, torch.dtype] = {}
    shared: dict[str, list[tuple[bool, bool]]] = {}  # per call: (autocast on, the shared-bottom pass answered)
    real_attack, real_load = mp_module.reference_attack, mp_module.load_arms
    real_shared = mp_module.adapters_response_nll

    def spy_shared(*args, **kw):
        out = real_shared(*args, **kw)
        shared.setdefault(current, []).append((torch.is_autocast_enabled("cpu"), out is not None))
        return out

    def spy_attack(member_target, member_ref, nonmember_target, nonmember_ref, **kw):
        scores = (member_target, member_ref, nonmember_target, nonmember_ref)
        seen.setdefault(current, []).extend(np.asarray(x) for x in scores)
        return real_attack(member_target, member_ref, nonmember_target, nonmember_ref, **kw)

    def spy_load(*args, **kw):
        model, tok = real_load(*args, **kw)
        loaded[current] = next(model.get_base_model().parameters()).dtype
        return model, tok

    monkeypatch.setattr(mp_module, "reference_attack", spy_attack)
    monkeypatch.setattr(mp_module, "load_arms", spy_load)
    monkeypatch.setattr(mp_module, "adapters_response_nll", spy_shared)
    tables = {}
    for current in ("float32", "bfloat16"):
        c = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"precision": current})})
        with caplog.at_level(logging.WARNING, logger="dpsynth.evaluate.model_privacy"):
            tables[current] = mp_module.model_privacy(c, run, inputs, MetricList(), {})
    assert loaded == {"float32": torch.float32, "bfloat16": torch.bfloat16}
    assert tables["float32"]["mia"]["scoring"] == "float32 weights, no autocast"
    assert tables["bfloat16"]["mia"]["scoring"] == "bfloat16 weights, bf16 autocast"
    # members and non-members each scored once through the shared bottom block, under autocast only in bf16, and
    # the shared pass held in bf16 too (no fallback to scoring each model whole)
    assert shared == {"float32": [(False, True)] * 2, "bfloat16": [(True, True)] * 2}
    assert "could not be shared" not in caplog.text
    # the same units and models, each loss within 2% of its float32 value (bf16 keeps 8 bits of mantissa), and not
    # equal to it: the bf16 path did run
    f32, b16 = seen["float32"], seen["bfloat16"]
    assert len(f32) == len(b16) == 8  # two arms x (member/non-member x target/reference)
    for a, b in zip(f32, b16, strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-2)
    assert any(not np.array_equal(a, b) for a, b in zip(f32, b16, strict=True))
