"""``train.init_adapter``: a public warm start that both arms and the frontier's eps-0 row start from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dpsynth import api
from dpsynth.config import LoraSettings, load_config
from dpsynth.errors import ConfigError, DPSynthError
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


def _cfg(model_dir: Path, *extra: str):
    small = ["data.demo_records=60", "data.max_tokens=24", "train.batch_size=8", "train.physical_batch_size=4"]
    return load_config(None, [f"model.name={model_dir}", *small, *extra])


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


def test_an_adapter_on_some_of_the_modules_starts_the_others_fresh(tmp_path, tokenizer, caplog):
    """A q,v warm start for an arm on q,k,v,o (train.no_dp_target_modules): q and v load in full, k and o keep their
    fresh initialisation with B = 0, so the arm computes exactly what the warm start's model computes."""
    warm_settings = LoraSettings(top_k_layers=1)
    folder, weights = _warm_adapter(tmp_path, tokenizer, warm_settings)
    warm = add_lora(make_tiny_llama(len(tokenizer)), warm_settings, seed=0)
    load_init_adapter(warm, folder)
    wide = add_lora(
        make_tiny_llama(len(tokenizer)),
        LoraSettings(top_k_layers=1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        seed=0,
    )
    with caplog.at_level("INFO", logger="dpsynth.train.lora"):
        assert load_init_adapter(wide, folder) == adapter_digest(folder)
    assert "['k_proj', 'o_proj'] start fresh" in caplog.text
    loaded = trainable_parameters(wide)
    assert weights.keys() < loaded.keys()
    assert all(torch.equal(loaded[n], weights[n]) for n in weights)
    fresh = [n for n in loaded if n not in weights]
    assert {n.partition(".lora_")[0].rpartition(".")[2] for n in fresh} == {"k_proj", "o_proj"}
    assert all(not loaded[n].any() for n in fresh if ".lora_B." in n)
    ids = torch.randint(0, len(tokenizer), (2, 9), generator=torch.Generator().manual_seed(1))
    warm.eval(), wide.eval()
    with torch.no_grad():
        torch.testing.assert_close(wide(input_ids=ids).logits, warm(input_ids=ids).logits)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["self_attn.q_proj", "self_attn.v_proj"]])
def test_a_module_the_adapter_names_must_load_in_full(tmp_path, tokenizer, targets):
    """Only modules the adapter does not name may start fresh: one it names but whose tensors its file lacks is refused
    (with targets written as peft also takes them, a dotted suffix of the module's path)."""
    settings = LoraSettings(top_k_layers=1, target_modules=targets)
    folder, _ = _warm_adapter(tmp_path, tokenizer, settings)
    f = folder / "adapter_model.safetensors"
    save_file({k: v for k, v in load_file(str(f)).items() if ".v_proj." not in k}, str(f))
    wide = LoraSettings(top_k_layers=1, target_modules=[*targets, "o_proj"])
    with pytest.raises(ConfigError, match=r"does not fit this model's LoRA \(unexpected: \[\], missing: \[.*v_proj"):
        load_init_adapter(add_lora(make_tiny_llama(len(tokenizer)), wide, seed=0), folder)


def test_a_warm_start_that_does_not_fit_the_non_dp_arm_is_refused_before_the_dp_arm(
    tmp_path, tokenizer, tiny_model_dir
):
    """Checked for every arm before anything trains or is charged, not when the baseline starts after a DP release."""
    import os

    from dpsynth.privacy.ledger import Ledger

    folder, _ = _warm_adapter(tmp_path, tokenizer, LoraSettings(top_k_layers=1))
    cfg = _cfg(
        tiny_model_dir,
        "train.max_steps=1",
        "train.lora.top_k_layers=1",
        f"train.init_adapter={folder}",
        "train.no_dp_target_modules=[q_proj,o_proj]",  # no v_proj: the q,v adapter does not fit this arm
    )
    out = tmp_path / "run"
    api.prepare(cfg, out)
    with pytest.raises(
        ConfigError, match=r"does not fit the no_dp arm's LoRA \(target_modules: \['q_proj', 'v_proj'\]"
    ):
        api.train(cfg, out, progress=False)
    assert not RunDir(out).privacy_json("dp").is_file()
    assert Ledger(os.environ["DPSYNTH_LEDGER"]).releases(include_pending=True) == []
    with pytest.raises(ConfigError, match="no_dp_target_modules"):
        _cfg(tiny_model_dir, "train.no_dp_target_modules=[]")
    # a set of modules: any order, repeats, is one setting (one fingerprint, one stamp)
    a = _cfg(tiny_model_dir, "train.no_dp_target_modules=[o_proj,q_proj,v_proj,q_proj]").train.no_dp_target_modules
    assert a == ["o_proj", "q_proj", "v_proj"]


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
    cfg = _cfg(tiny_model_dir, "train.max_steps=2", "train.lora.top_k_layers=1", f"train.init_adapter={folder}")
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
        assert record == {
            "path": str(folder),
            "digest": adapter_digest(folder),
            "declared_public": True,
            "fitted_to": None,
        }
    # the same path with other weights is another warm start: a resume refuses to keep arms made from the old one
    _warm_adapter(tmp_path, tokenizer, settings, seed=3)  # same folder name
    for f in folder.iterdir():
        if f.name == "adapter_model.safetensors":
            state = load_file(str(f))
            save_file({k: v + 1 for k, v in state.items()}, str(f))
    with pytest.raises(DPSynthError, match=r"--resume: .*train.init_adapter .*\(the dp arm started from other weights"):
        api.train(cfg, out, progress=False, resume=True)


def test_a_non_dp_arm_on_more_modules_trains_them_from_the_same_warm_start(
    tmp_path, tokenizer, tiny_model_dir, monkeypatch
):
    """train.no_dp_target_modules: the baseline's adapter covers its own modules, the DP arm's the shared ones; the
    warm start's q,v go into both."""
    from dpsynth.config_diff import training_changes

    settings = LoraSettings(top_k_layers=1)
    folder, weights = _warm_adapter(tmp_path, tokenizer, settings)
    starts: list[dict[str, torch.Tensor]] = []
    real_snapshot = loop_module.snapshot

    def spy(model):
        starts.append(real_snapshot(model))
        return starts[-1]

    monkeypatch.setattr(loop_module, "snapshot", spy)
    extra = ("train.max_steps=2", "train.lora.top_k_layers=1", f"train.init_adapter={folder}", "train.noise_seed=5")
    cfg = _cfg(tiny_model_dir, *extra, "train.no_dp_target_modules=[q_proj,k_proj,v_proj,o_proj]")
    out = tmp_path / "run"
    api.prepare(cfg, out)
    api.train(cfg, out, progress=False)
    run = RunDir(out)
    targets = {a: sorted(read_json(run.adapter(a) / "adapter_config.json")["target_modules"]) for a in ("dp", "no_dp")}
    assert targets == {"dp": ["q_proj", "v_proj"], "no_dp": ["k_proj", "o_proj", "q_proj", "v_proj"]}
    assert read_json(run.privacy_json("no_dp"))["target_modules"] == targets["no_dp"]
    # both arms start from the warm start's q,v (the baseline's k,o with B = 0)
    dp_start, no_dp_start = starts
    assert dp_start.keys() == weights.keys() < no_dp_start.keys()
    assert all(torch.equal(dp_start[n], weights[n]) and torch.equal(no_dp_start[n], weights[n]) for n in weights)
    assert all(not no_dp_start[n].any() for n in no_dp_start.keys() - weights.keys() if ".lora_B." in n)
    # the DP arm is the one it would be without the key: same weights to the bit (same seeds, same noise)
    alone = tmp_path / "alone"
    api.prepare(_cfg(tiny_model_dir, *extra, "train.arms=[dp]"), alone)
    api.train(_cfg(tiny_model_dir, *extra, "train.arms=[dp]"), alone, progress=False)
    ours, theirs = (load_file(str(RunDir(d).adapter("dp") / "adapter_model.safetensors")) for d in (out, alone))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for arm in ("dp", "no_dp"):
        assert read_json(run.privacy_json(arm))["init_adapter"]["digest"] == adapter_digest(folder)
    # the evaluation's one model carrying both adapters (and the warm start) scores each arm as that arm alone
    from peft import PeftModel

    from dpsynth.evaluate.adapter_nll import active_adapter
    from dpsynth.evaluate.model_privacy import REFERENCE, load_arms
    from dpsynth.models.loader import load_model

    shared, _ = load_arms(cfg, run, ["dp", "no_dp"], folder)
    ids = torch.randint(0, len(tokenizer), (2, 9), generator=torch.Generator().manual_seed(2))
    logits = {}
    with torch.no_grad():
        for name, path in (("dp", run.adapter("dp")), ("no_dp", run.adapter("no_dp")), (REFERENCE, folder)):
            with active_adapter(shared, name) as m:
                logits[name] = m(input_ids=ids).logits
            alone = PeftModel.from_pretrained(load_model(cfg.model), path).eval()
            torch.testing.assert_close(logits[name], alone(input_ids=ids).logits)
    assert not torch.allclose(logits["dp"], logits["no_dp"])
    # a resume of the DP arm alone may change it; one with the non-DP arm started may not
    other = _cfg(tiny_model_dir, *extra)
    assert training_changes(cfg, other, ["dp"]) == []
    assert training_changes(cfg, other, ["dp", "no_dp"]) == ["train.no_dp_target_modules"]


def test_without_it_nothing_is_loaded_or_recorded(tmp_path, tiny_model_dir, monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("no warm start was configured")

    monkeypatch.setattr(loop_module, "load_init_adapter", refuse)
    cfg = _cfg(tiny_model_dir, "train.max_steps=1", "train.arms=[dp]")
    api.prepare(cfg, tmp_path / "run")
    api.train(cfg, tmp_path / "run", progress=False)
    assert "init_adapter" not in read_json(RunDir(tmp_path / "run").privacy_json("dp"))


def test_a_checkpoint_from_another_warm_start_is_not_resumed(tmp_path, tokenizer, tiny_model_dir, monkeypatch):
    """A crash, then the adapter is retrained at the same path: the checkpoint's weights began elsewhere."""
    settings = LoraSettings(top_k_layers=1)
    folder, _ = _warm_adapter(tmp_path, tokenizer, settings)
    over = [
        f"model.name={tiny_model_dir}",
        "data.demo_records=60",
        "data.max_tokens=24",
        "train.batch_size=8",
        "train.max_steps=3",
        "train.checkpoint_every=1",
        "train.arms=[dp]",
        "train.lora.top_k_layers=1",
        f"train.init_adapter={folder}",
    ]
    cfg = load_config(None, over)
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
    f = folder / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(str(f)).items()}, str(f))
    with pytest.raises(DPSynthError, match="started from another warm start"):
        api.train(cfg, out, progress=False, resume=True)


def test_an_adapter_of_this_data_is_refused_before_any_charge(tmp_path, tokenizer, tiny_model_dir):
    """Inside the run's directory, or fitted (by its run's prepare.json) to the same data file: not public."""
    import os

    from dpsynth.privacy.ledger import Ledger

    settings = LoraSettings(top_k_layers=1)
    base = [f"model.name={tiny_model_dir}", "data.demo_records=60", "data.max_tokens=24", "train.max_steps=1"]
    base += ["train.arms=[dp]", "train.lora.top_k_layers=1"]
    out = tmp_path / "run"
    api.prepare(load_config(None, base), out)
    inside, _ = _warm_adapter(out, tokenizer, settings)
    with pytest.raises(ConfigError, match="lies inside"):
        api.train(load_config(None, [*base, f"train.init_adapter={inside}"]), out, progress=False)
    # a run elsewhere on the same (demo) data: its prepare.json names the same source
    other = tmp_path / "other"
    api.prepare(load_config(None, base), other)
    (other / "no_dp").mkdir()
    fitted, _ = _warm_adapter(other / "no_dp", tokenizer, settings)
    fitted.rename(other / "no_dp" / "adapter")
    with pytest.raises(ConfigError, match="the same data this run protects"):
        api.train(load_config(None, [*base, f"train.init_adapter={other / 'no_dp' / 'adapter'}"]), out, progress=False)
    with pytest.raises(ConfigError, match="not found"):
        api.train(load_config(None, [*base, f"train.init_adapter={tmp_path / 'none'}"]), out, progress=False)
    assert Ledger(os.environ["DPSYNTH_LEDGER"]).releases(include_pending=True) == []  # no reservation for any
    assert not RunDir(out).privacy_json("dp").is_file()


def test_an_adapter_of_another_model_size_is_a_config_error(tmp_path, tokenizer):
    wide = add_lora(make_tiny_llama(len(tokenizer), hidden_size=64), LoraSettings(top_k_layers=1), seed=0)
    wide.save_pretrained(str(tmp_path / "wide"))
    model = add_lora(make_tiny_llama(len(tokenizer)), LoraSettings(top_k_layers=1), seed=0)
    with pytest.raises(ConfigError, match="does not fit this model"):
        load_init_adapter(model, tmp_path / "wide")


def test_private_evolution_refuses_a_warm_start(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.init_adapter is a warm start for fine-tuning"):
        load_config(None, ["generator=pe", f"train.init_adapter={tmp_path}"])


def test_a_warm_start_spelled_another_way_is_not_a_training_change(tmp_path, monkeypatch):
    """A frontier row made with the warm start's absolute path, rerun from a config naming it relative to the working
    directory (or through a symlink), is the same training: refusing it sent a kept sweep to a new directory."""
    from dpsynth.config_diff import training_changes

    adapter = tmp_path / "warm" / "no_dp" / "adapter"
    adapter.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "warm", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    absolute = load_config(None, [f"train.init_adapter={adapter}"])
    for spelling in ("warm/no_dp/adapter", "link/no_dp/adapter", "./warm/../warm/no_dp/adapter"):
        assert training_changes(absolute, load_config(None, [f"train.init_adapter={spelling}"])) == [], spelling
    (tmp_path / "other").mkdir()
    assert training_changes(absolute, load_config(None, ["train.init_adapter=other"])) == ["train.init_adapter"]
    assert training_changes(absolute, load_config(None, [])) == ["train.init_adapter"]
