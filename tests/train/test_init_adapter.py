"""``train.init_adapter``: a public warm start that both arms and the frontier's eps-0 row start from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dpsynth import api
from dpsynth.config import LoraSettings, load_config
from dpsynth.errors import ConfigError
from dpsynth.models.convert import adapter_digest
from dpsynth.rundir import RunDir, read_json
from dpsynth.train import loop as loop_module
from dpsynth.train.lora import add_lora, load_init_adapter, trainable_parameters
from tests.conftest import make_tiny_llama


def _warm_adapter(tmp_path: Path, tokenizer, settings: LoraSettings, seed: int = 3) -> tuple[Path, dict]:
    """An adapter folder whose B matrices are not zero (a fresh one would be indistinguishable from no warm start)."""
    model = add_lora(make_tiny_llama(len(tokenizer)), settings, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for p in trainable_parameters(model).values():
        p.data = torch.randn(p.shape, generator=gen)
    folder = tmp_path / f"warm-{seed}"
    model.save_pretrained(str(folder))
    return folder, {n: p.detach().clone() for n, p in trainable_parameters(model).items()}


def test_the_warm_start_sets_every_lora_matrix(tmp_path, tokenizer):
    settings = LoraSettings(top_k_layers=1)
    folder, weights = _warm_adapter(tmp_path, tokenizer, settings)
    model = add_lora(make_tiny_llama(len(tokenizer)), settings, seed=0)
    assert load_init_adapter(model, folder) == adapter_digest(folder)
    loaded = trainable_parameters(model)
    assert loaded.keys() == weights.keys() and len(weights) > 0
    assert all(torch.equal(loaded[n], weights[n]) for n in weights)


@pytest.mark.parametrize(
    ("ours", "named"),
    [
        (LoraSettings(), "layers_to_transform"),  # every block, against an adapter on the top block only
        (LoraSettings(top_k_layers=1, r=4), "r"),
        (LoraSettings(top_k_layers=1, target_modules=["q_proj"]), "target_modules"),
    ],
)
def test_another_shape_is_refused_naming_what_differs(tmp_path, tokenizer, ours, named):
    folder, _ = _warm_adapter(tmp_path, tokenizer, LoraSettings(top_k_layers=1))
    model = add_lora(make_tiny_llama(len(tokenizer)), ours, seed=0)
    with pytest.raises(ConfigError, match=rf"train.init_adapter: .*adapter_config\.json.*{named}"):
        load_init_adapter(model, folder)


def test_a_folder_without_an_adapter_is_refused(tmp_path, tokenizer):
    model = add_lora(make_tiny_llama(len(tokenizer)), LoraSettings(), seed=0)
    with pytest.raises(ConfigError, match=r"train.init_adapter: .*adapter_config\.json not found"):
        load_init_adapter(model, tmp_path)


def test_both_arms_start_from_it_and_privacy_json_names_it(tmp_path, tokenizer, tiny_model_dir, monkeypatch):
    settings = LoraSettings(top_k_layers=1)
    folder, weights = _warm_adapter(tmp_path, tokenizer, settings)
    starts: list[dict[str, torch.Tensor]] = []
    real_snapshot = loop_module.snapshot

    def spy(model):
        taken = real_snapshot(model)
        starts.append(taken)
        return taken

    monkeypatch.setattr(loop_module, "snapshot", spy)
    cfg = load_config(
        None,
        [
            f"model.name={tiny_model_dir}",
            "data.demo_records=60",
            "data.max_tokens=24",
            "train.batch_size=8",
            "train.physical_batch_size=4",
            "train.max_steps=2",
            "train.lora.top_k_layers=1",
            f"train.init_adapter={folder}",
        ],
    )
    out = tmp_path / "run"
    api.prepare(cfg, out)
    api.train(cfg, out, progress=False)
    assert len(starts) == 2  # one per arm, taken before the first step
    for start in starts:
        assert start.keys() == weights.keys()
        assert all(torch.equal(start[n], weights[n]) for n in weights)
    run = RunDir(out)
    for arm in ("dp", "no_dp"):
        record = read_json(run.privacy_json(arm))["init_adapter"]
        assert record == {"path": str(folder), "sha256": adapter_digest(folder), "public": True}


def test_without_it_nothing_is_loaded_or_recorded(tmp_path, tiny_model_dir, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("no warm start was configured")

    monkeypatch.setattr(loop_module, "load_init_adapter", refuse)
    cfg = load_config(
        None,
        [
            f"model.name={tiny_model_dir}",
            "data.demo_records=60",
            "data.max_tokens=24",
            "train.batch_size=8",
            "train.max_steps=1",
            "train.arms=[dp]",
        ],
    )
    api.prepare(cfg, tmp_path / "run")
    api.train(cfg, tmp_path / "run", progress=False)
    assert "init_adapter" not in read_json(RunDir(tmp_path / "run").privacy_json("dp"))
