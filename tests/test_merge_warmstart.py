"""``bench/merge_warmstart.py``: a public adapter merged into its base model gives a model folder that computes what
base + adapter computed, loads as ``model.name``, and records which adapter it holds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from dpsynth.config import LoraSettings, load_config
from dpsynth.errors import ConfigError
from dpsynth.models.adapters import attach_adapter
from dpsynth.models.config import ModelConfig
from dpsynth.models.convert import adapter_digest
from dpsynth.models.loader import load_model
from dpsynth.train import warm_start
from dpsynth.train.lora import add_lora, trainable_parameters

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "merge_warmstart.py"


def _script():
    spec = importlib.util.spec_from_file_location("merge_warmstart", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _adapter(base_dir: Path, out: Path) -> Path:
    """An adapter on every linear module of every block with nonzero B (a zero B would merge to the base itself)."""
    cfg = ModelConfig(name=str(base_dir), dtype="float32", device="cpu")
    lora = LoraSettings(target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = add_lora(load_model(cfg), lora, seed=1)
    gen = torch.Generator().manual_seed(1)
    for p in trainable_parameters(model).values():
        p.data = 0.1 * torch.randn(p.shape, generator=gen)
    model.save_pretrained(str(out))
    return out


def test_the_merged_folder_computes_base_plus_adapter_and_says_where_it_came_from(tmp_path, tiny_model_dir):
    adapter = _adapter(tiny_model_dir, tmp_path / "adapter")
    out = tmp_path / "merged"
    stamp = _script().merge(adapter, out, str(tiny_model_dir))

    ids = torch.tensor([[1, 5, 9, 13, 2]])
    base_cfg = ModelConfig(name=str(tiny_model_dir), dtype="float32", device="cpu")
    with torch.no_grad():
        want = attach_adapter(load_model(base_cfg), adapter)(input_ids=ids).logits
        bare = load_model(base_cfg)(input_ids=ids).logits
        got = load_model(ModelConfig(name=str(out), dtype="float32", device="cpu"))(input_ids=ids).logits
    assert not torch.allclose(want, bare, atol=1e-3)  # the adapter changes the model: the check below means something
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert stamp["adapter_digest"] == adapter_digest(adapter)
    assert json.loads((out / "dpsynth_warm_start.json").read_text()) == stamp
    (out / "dpsynth_warm_start.json").write_text("[1, 2]")  # not a stamp: a clear error, not a crash
    with pytest.raises(ConfigError, match="not a warm-start stamp"):
        warm_start.merged_stamp(load_config(None, [f"model.name={out}"]))
    assert (out / "tokenizer_config.json").is_file()


def test_an_existing_folder_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    out = tmp_path / "merged"
    out.mkdir()
    monkeypatch.setattr(sys, "argv", ["merge_warmstart.py", str(tmp_path / "adapter"), "--out", str(out)])
    with pytest.raises(SystemExit, match="exists"):
        _script().main()
    assert list(out.iterdir()) == []


def test_the_base_is_the_adapters_own_and_another_is_refused(tmp_path):
    """``--base`` defaults to the ``model.name`` of the run that trained the adapter; another base is refused (an
    adapter of the same shape would load into it silently), and without a run's config.yaml ``--base`` is needed."""
    run = tmp_path / "public-run"
    adapter = run / "no_dp" / "adapter"
    adapter.mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  name: org/base-a\n")
    script = _script()
    assert script.base_model(adapter, None) == "org/base-a"
    assert script.base_model(adapter, "org/base-a") == "org/base-a"
    with pytest.raises(SystemExit, match="trained on org/base-a"):
        script.base_model(adapter, "org/base-b")
    loose = tmp_path / "loose" / "x" / "adapter"
    loose.mkdir(parents=True)
    assert script.base_model(loose, "org/base-b") == "org/base-b"
    with pytest.raises(SystemExit, match="give --base"):
        script.base_model(loose, None)


def test_a_merged_warm_start_fitted_to_this_data_is_refused_and_another_is_recorded(tmp_path, tiny_model_dir):
    """``model.name`` a merged folder: refused, before any charge, when its stamp says the adapter was fitted to the
    data this run protects or lies inside this run; otherwise each arm's privacy.json records it."""
    import os

    from dpsynth import api
    from dpsynth.privacy.ledger import Ledger
    from dpsynth.rundir import RunDir, read_json

    small = ["data.demo_records=60", "data.max_tokens=24", "train.max_steps=1", "train.arms=[dp]"]
    other = tmp_path / "other"  # a run on the same (demo) data, whose non-DP adapter is merged
    api.prepare(load_config(None, [f"model.name={tiny_model_dir}", *small]), other)
    adapter = _adapter(tiny_model_dir, other / "no_dp" / "adapter")
    merged = tmp_path / "merged"
    stamp = _script().merge(adapter, merged, str(tiny_model_dir))
    assert stamp["fitted_to"]["fingerprint"]  # read from that run's prepare.json

    cfg = load_config(None, [f"model.name={merged}", *small])
    out = tmp_path / "run"
    api.prepare(cfg, out)
    with pytest.raises(ConfigError, match=r"model.name: .*the same data this run protects"):
        api.train(cfg, out, progress=False)
    (merged / "dpsynth_warm_start.json").write_text(json.dumps({**stamp, "adapter": str(out / "no_dp" / "adapter")}))
    with pytest.raises(ConfigError, match=r"model.name: .*lies inside"):
        api.train(cfg, out, progress=False)
    assert Ledger(os.environ["DPSYNTH_LEDGER"]).releases(include_pending=True) == []  # no reservation for either
    assert not RunDir(out).privacy_json("dp").is_file()

    public = {**stamp, "fitted_to": {"path": "public.csv", "fingerprint": "another data set"}}
    (merged / "dpsynth_warm_start.json").write_text(json.dumps(public))
    api.train(cfg, out, progress=False)
    assert read_json(RunDir(out).privacy_json("dp"))["merged_warm_start"] == {**public, "declared_public": True}

    # generation and Private Evolution load model.name too: the same refusal, before a record or a charge
    (merged / "dpsynth_warm_start.json").write_text(json.dumps(stamp))
    with pytest.raises(ConfigError, match=r"model.name: .*the same data this run protects"):
        api.generate(cfg, out, progress=False)
    assert not RunDir(out).generated("dp").is_file()
    pe = load_config(None, [f"model.name={merged}", *small, "generator=pe"])
    api.prepare(pe, tmp_path / "pe")
    with pytest.raises(ConfigError, match=r"model.name: .*the same data this run protects"):
        api.generate(pe, tmp_path / "pe", progress=False)
    assert len(Ledger(os.environ["DPSYNTH_LEDGER"]).releases(include_pending=True)) == 1  # the dp arm's, above


def test_a_merged_folder_is_fingerprinted_by_the_warm_start_it_holds(tmp_path, tiny_model_dir):
    """A frontier keeps a row only while ``model.name`` holds the same merged warm start: merged again under the same
    name, the rows are made again; a folder without a stamp is fingerprinted as before the stamp existed."""
    import shutil

    from dpsynth.frontier.fingerprint import _view, fingerprint
    from dpsynth.frontier.spec import RowSpec

    row = RowSpec("eps4", 4.0)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    cfg = load_config(None, [f"model.name={folder}"])
    assert not [k for k, _ in _view(cfg, row, 50) if "merged_warm_start" in k]
    bare = fingerprint(cfg, row)
    (folder / "dpsynth_warm_start.json").write_text(json.dumps({"adapter": "a", "adapter_digest": "one"}))
    first = fingerprint(cfg, row)
    (folder / "dpsynth_warm_start.json").write_text(json.dumps({"adapter": "a", "adapter_digest": "two"}))
    assert len({bare, first, fingerprint(cfg, row)}) == 3


def test_the_frontier_refuses_a_merged_warm_start_of_its_data_and_names_a_public_one(tmp_path, tiny_model_dir):
    """``dpsynth frontier``: refused before any row or charge when the stamp names the sweep's own data; otherwise
    frontier.json carries the stamp and frontier.md names the merged adapter."""
    import os
    import shutil

    from dpsynth import api
    from dpsynth.frontier.config import QUICK_OVERRIDES
    from dpsynth.frontier.run import run_frontier
    from dpsynth.privacy.ledger import Ledger
    from dpsynth.rundir import read_json

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    settings = [*QUICK_OVERRIDES, f"model.name={folder}", "data.demo_records=60", "data.max_tokens=24"]
    settings += ["generate.max_new_tokens=8", "frontier.n_synthetic=12", "frontier.eps=[0]"]
    api.prepare(load_config(None, settings), tmp_path / "probe")  # the demo data's fingerprint, as the sweep reads it
    source = read_json(tmp_path / "probe" / "data" / "prepare.json")["source"]
    stamp = {"adapter": "/elsewhere/no_dp/adapter", "adapter_digest": "d", "fitted_to": dict(source)}
    (folder / "dpsynth_warm_start.json").write_text(json.dumps(stamp))
    with pytest.raises(ConfigError, match=r"model.name: .*the same data this run protects"):
        run_frontier(load_config(None, settings), tmp_path / "f", progress=False)
    assert not (tmp_path / "f" / "rows").exists()
    assert Ledger(os.environ["DPSYNTH_LEDGER"]).releases(include_pending=True) == []

    public = {**stamp, "fitted_to": {"path": "public.csv", "fingerprint": "another data set"}}
    (folder / "dpsynth_warm_start.json").write_text(json.dumps(public))
    doc = run_frontier(load_config(None, settings), tmp_path / "g", progress=False)
    assert doc["merged_warm_start"] == public
    table = (tmp_path / "g" / "frontier.md").read_text()
    assert "a warm start merged into its weights, /elsewhere/no_dp/adapter" in table


def test_a_resume_refuses_a_model_holding_another_merged_warm_start(tmp_path, tiny_model_dir, monkeypatch):
    """A crash, then the folder is merged again under the same name: the checkpoint began from other weights; and a
    finished arm is not kept as if trained on the new ones."""
    import shutil

    from dpsynth import api
    from dpsynth.errors import DPSynthError
    from dpsynth.train import loop as loop_module

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    stamp = {"adapter": "/elsewhere/no_dp/adapter", "adapter_digest": "one", "fitted_to": {"fingerprint": "public"}}
    (folder / "dpsynth_warm_start.json").write_text(json.dumps(stamp))
    over = [f"model.name={folder}", "data.demo_records=60", "data.max_tokens=24", "train.batch_size=8"]
    cfg = load_config(None, [*over, "train.max_steps=3", "train.checkpoint_every=1", "train.arms=[dp]"])
    out = tmp_path / "run"
    api.prepare(cfg, out)

    class Crash(Exception):
        pass

    real_step = loop_module.ArmTrainer._after_step

    def crash_after_first(self, *a, **k):
        real_step(self, *a, **k)
        if self.state.step >= 1:
            raise Crash

    monkeypatch.setattr(loop_module.ArmTrainer, "_after_step", crash_after_first)
    with pytest.raises(Crash):
        api.train(cfg, out, progress=False)
    monkeypatch.setattr(loop_module.ArmTrainer, "_after_step", real_step)
    (folder / "dpsynth_warm_start.json").write_text(json.dumps({**stamp, "adapter_digest": "two"}))
    with pytest.raises(DPSynthError, match=r"started from another warm start \(merged into model.name"):
        api.train(cfg, out, progress=False, resume=True)
    (folder / "dpsynth_warm_start.json").write_text(json.dumps(stamp))
    api.train(cfg, out, progress=False, resume=True)  # the same stamp: the checkpoint resumes and the arm finishes
    (folder / "dpsynth_warm_start.json").write_text(json.dumps({**stamp, "adapter_digest": "two"}))
    with pytest.raises(DPSynthError, match=r"--resume: .*merged warm start \(the dp arm started from other weights\)"):
        api.train(cfg, out, progress=False, resume=True)
