"""The prompt format an arm was trained in is recorded, and an arm is never prompted in another one."""

from __future__ import annotations

import shutil

import pytest

from dpsynth import api
from dpsynth.config import ModelConfig, load_config
from dpsynth.errors import DPSynthError
from dpsynth.models import loader
from dpsynth.rundir import RunDir, read_json, read_jsonl, write_json, write_jsonl
from dpsynth.train import prompt_format

SMALL = ["data.demo_records=60", "data.max_tokens=24", "generate.max_new_tokens=6", "generate.num_records=4"]


def _changed_template(model: ModelConfig):
    """The tokenizer as a later template would render it: the model's turn ends on another token."""
    other = loader.load_tokenizer(model)
    assert "<|im_end|>" in other.chat_template
    other.chat_template = other.chat_template.replace("<|im_end|>", "<|endoftext|>")
    return other


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A run whose non-DP arm trained (no DP: no ledger charge is needed to test what the arm records)."""
    out = tmp_path_factory.mktemp("fmt") / "run"
    cfg = load_config(None, [f"model.name={tiny_model_dir}", *SMALL, "train.arms=[no_dp]", "generate.arms=[no_dp]"])
    api.prepare(cfg, out)
    api.train(cfg, out, progress=False)
    return cfg, out


def test_training_records_the_format_and_it_is_today_s(trained):
    cfg, out = trained
    recorded = read_json(RunDir(out).privacy_json("no_dp"))[prompt_format.KEY]
    assert recorded.startswith("sha256:") and recorded == prompt_format.current(cfg.model, RunDir(out))
    assert prompt_format.stale(cfg.model, RunDir(out), "no_dp") is None
    assert prompt_format.stale(cfg.model, RunDir(out), "dp") is None  # not trained: nothing to compare


def test_the_digest_sees_the_template_and_the_system_prompt_not_the_records(trained, tmp_path):
    cfg, out = trained
    run = RunDir(tmp_path / "copy")
    shutil.copytree(out, run.root)
    tok = loader.load_tokenizer(cfg.model)
    before = prompt_format.digest(tok, run)
    assert prompt_format.digest(_changed_template(cfg.model), run) != before
    # the private records are not read: another training split gives the same digest
    rows = read_jsonl(run.train)
    write_jsonl(run.train, [{**r, "text": "something else entirely"} for r in rows[:3]])
    assert prompt_format.digest(tok, run) == before
    info = read_json(run.prepare_json)
    info["system_prompt"] = info["system_prompt"] + " Be brief."
    write_json(run.prepare_json, info)
    assert prompt_format.digest(tok, run) != before


def test_generation_refuses_an_arm_trained_in_another_format(trained, tmp_path, monkeypatch):
    cfg, out = trained
    run = RunDir(tmp_path / "copy")
    shutil.copytree(out, run.root)
    api.generate(cfg, run.root, progress=False)  # today's format: generates
    assert len(read_jsonl(run.generated("no_dp"))) == 4
    run.generated("no_dp").unlink()
    changed = _changed_template(cfg.model)
    monkeypatch.setattr(loader, "load_tokenizer", lambda _cfg: changed)
    with pytest.raises(DPSynthError, match="another prompt format"):
        api.generate(cfg, run.root, progress=False)
    assert not run.generated("no_dp").exists()  # nothing written


def test_an_arm_that_records_no_format_is_used_as_before(trained, tmp_path):
    cfg, out = trained
    run = RunDir(tmp_path / "copy")
    shutil.copytree(out, run.root)
    info = read_json(run.privacy_json("no_dp"))
    del info[prompt_format.KEY]
    write_json(run.privacy_json("no_dp"), info)
    assert prompt_format.stale(cfg.model, run, "no_dp") is None


def test_a_template_that_writes_today_s_date_keeps_its_digest(trained, tmp_path):
    """Hub templates may stamp the date into the system turn (``strftime_now``): the digest renders under a stopped
    clock, or every arm would be refused the day after its training."""
    cfg, out = trained
    tok = loader.load_tokenizer(cfg.model)
    tok.chat_template = "{{ strftime_now('%Y-%m-%d %H:%M:%S.%f') }}\n" + tok.chat_template
    first = prompt_format.digest(tok, RunDir(out))
    assert "2000-01-01" not in tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    assert all(prompt_format.digest(tok, RunDir(out)) == first for _ in range(3))
    assert first != prompt_format.digest(loader.load_tokenizer(cfg.model), RunDir(out))


def test_membership_inference_refuses_an_arm_trained_in_another_format(trained, monkeypatch):
    """The evaluate stage's attacks load each arm through ``load_arms``: an arm scored in a prompt format it never saw
    would have losses that say little of what it memorised, so it is refused like generation refuses it."""
    from dpsynth.evaluate.model_privacy import load_arms

    cfg, out = trained
    run = RunDir(out)
    model, _ = load_arms(cfg, run, ["no_dp"])  # today's format: loads
    assert "no_dp" in model.peft_config
    changed = _changed_template(cfg.model)
    monkeypatch.setattr(loader, "load_tokenizer", lambda _cfg: changed)
    with pytest.raises(DPSynthError, match="membership inference"):
        load_arms(cfg, run, ["no_dp"])


def _with_warm_start(cfg, folder):
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"init_adapter": folder})})


def test_a_warm_start_fitted_in_another_format_is_refused_before_any_charge(trained, tmp_path, monkeypatch):
    """A public warm start is the run's first weights: fitted in a format that is no longer today's (gemma-3-270m's
    turn came to end in <eos>), a DP arm would spend its steps and budget unlearning it. Its own run re-renders its
    probe to tell, through a symlink too; an adapter copied out of its run has nothing to compare with and is used
    as before."""
    import os

    from dpsynth.errors import ConfigError
    from dpsynth.privacy.ledger import Ledger
    from dpsynth.train import warm_start

    cfg, warm = trained
    adapter = RunDir(warm).adapter("no_dp")
    other = [*(o for o in SMALL if not o.startswith("data.demo_records")), "data.demo_records=50"]  # other data
    new = load_config(
        None, [f"model.name={cfg.model.name}", *other, "train.arms=[dp]", f"train.init_adapter={adapter}"]
    )
    warm_start.check(new, tmp_path / "run", None)  # today's format: accepted
    changed = _changed_template(cfg.model)
    monkeypatch.setattr(loader, "load_tokenizer", lambda _cfg: changed)
    api.prepare(new, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"records prompt format .*fit the warm start again"):
        api.train(new, tmp_path / "run", progress=False)
    assert Ledger(os.environ["DPSYNTH_LEDGER"]).releases(include_pending=True) == []  # refused before any reservation
    assert not RunDir(tmp_path / "run").privacy_json("dp").is_file()
    link = tmp_path / "link"
    link.symlink_to(adapter, target_is_directory=True)
    with pytest.raises(ConfigError, match="records prompt format"):  # a link names the run it points into
        warm_start.check(_with_warm_start(new, link), tmp_path / "run", None)
    # a model whose vocabulary was cut numbers its tokens anew: the refusal says which setting differs
    cut = new.model_copy(update={"model": new.model.model_copy(update={"vocabulary": "ascii"})})
    with pytest.raises(ConfigError, match=r"fitted with model\.vocabulary=full \(this run: ascii\)"):
        warm_start.check(cut, tmp_path / "run", None)
    copied = tmp_path / "elsewhere" / "copied" / "adapter"
    shutil.copytree(adapter, copied)
    warm_start.check(_with_warm_start(new, copied), tmp_path / "run", None)  # out of its run: trusted as before


def test_a_length_bound_is_not_charged_for_a_run_that_would_refuse_its_warm_start(trained, tmp_path, monkeypatch):
    """With data.max_tokens=auto the prepare stage charges the DP length bound: a warm start that training would
    refuse is refused there, before that charge, and nothing of the run is left."""
    import os

    from dpsynth.errors import ConfigError
    from dpsynth.privacy.ledger import Ledger

    cfg, warm = trained
    other = [o for o in SMALL if not o.startswith(("data.demo_records", "data.max_tokens"))]
    keys = ["data.demo_records=50", "data.max_tokens=auto", "train.arms=[dp]"]
    new = load_config(
        None, [f"model.name={cfg.model.name}", *other, *keys, f"train.init_adapter={RunDir(warm).adapter('no_dp')}"]
    )
    changed = _changed_template(cfg.model)
    monkeypatch.setattr(loader, "load_tokenizer", lambda _cfg: changed)
    with pytest.raises(ConfigError, match="records prompt format"):
        api.run_pipeline(new, tmp_path / "run", progress=False)
    assert Ledger(os.environ["DPSYNTH_LEDGER"]).releases(include_pending=True) == []
    assert not (tmp_path / "run").exists()
