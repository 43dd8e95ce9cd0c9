"""With a public warm start (``train.init_adapter``), the privacy attacks measure the private fine-tuning alone:
their reference model is the base model WITH the warm start, the model as it was before any private record.

Against the bare base model the warm start's public fitting would move every record's loss, members' and
non-members' alike, and blunt the reference attack and the audit; these tests fail if the reference falls back to it.
"""

from __future__ import annotations

import numpy as np
from safetensors.torch import load_file, save_file

from dpsynth import api
from dpsynth.config import LoraSettings, load_config
from dpsynth.evaluate import model_privacy as mp_module
from dpsynth.evaluate.collect import MetricList, load_inputs
from dpsynth.models.adapters import attach_adapter
from dpsynth.models.convert import adapter_digest
from dpsynth.models.loader import load_model, load_tokenizer
from dpsynth.privacy import audit_run
from dpsynth.privacy.audit_scoring import canary_losses
from dpsynth.rundir import RunDir, read_json, read_jsonl, write_json
from dpsynth.train import warm_start
from tests.train.test_init_adapter import _warm_adapter

SMALL = [
    "data.demo_records=80",
    "data.max_tokens=24",
    "train.batch_size=8",
    "train.physical_batch_size=8",
    "train.max_steps=2",
    "train.checkpoint_every=100",
    "generate.num_records=6",
    "generate.max_new_tokens=8",
    "generate.batch_size=6",
    "generate.engine=hf",
    "evaluate.mia_max_records=8",
]


def trained_run(cfg, out):
    """A run prepared, trained and generated with ``cfg`` in ``out``: its folder and its evaluation inputs."""
    api.prepare(cfg, out)
    api.train(cfg, out, progress=False)
    api.generate(cfg, out, progress=False)
    run = RunDir(out)
    return run, load_inputs(cfg, run)


def _record(run: RunDir, arm: str, entry: dict | None) -> None:
    run.arm(arm).mkdir(parents=True, exist_ok=True)
    write_json(run.privacy_json(arm), {"dp": arm == "dp", **({"init_adapter": entry} if entry else {})})


def test_the_reference_is_the_warm_start_the_arms_recorded_while_it_holds_their_weights(tmp_path, tokenizer):
    folder, _ = _warm_adapter(tmp_path, tokenizer, LoraSettings(top_k_layers=1))
    entry = {"path": str(folder), "digest": adapter_digest(folder), "declared_public": True}
    run = RunDir(tmp_path / "run")
    _record(run, "dp", None)
    _record(run, "no_dp", None)
    assert warm_start.reference(run, ["dp", "no_dp"]) == (None, warm_start.BASE)

    _record(run, "dp", entry)
    ref, words = warm_start.reference(run, ["dp", "no_dp"])  # one arm began cold: no common reference
    assert ref is None and "different weights" in words

    _record(run, "no_dp", entry)
    ref, words = warm_start.reference(run, ["dp", "no_dp"])
    assert ref == folder and str(folder) in words and "warm start" in words

    weights = folder / "adapter_model.safetensors"  # retrained in place: not the weights the arms began from
    save_file({k: v + 1 for k, v in load_file(str(weights)).items()}, str(weights))
    ref, words = warm_start.reference(run, ["dp", "no_dp"])
    assert ref is None and "no longer holds" in words and words.startswith(warm_start.BASE)
    weights.unlink()
    ref, words = warm_start.reference(run, ["dp"])
    assert ref is None and "is not found" in words


def test_a_relative_warm_start_is_found_from_another_directory(tmp_path, tokenizer, monkeypatch):
    folder, _ = _warm_adapter(tmp_path, tokenizer, LoraSettings(top_k_layers=1))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [f"train.init_adapter={folder.name}"])  # relative to the working directory
    entry = warm_start.record(cfg, adapter_digest(folder))
    assert entry["path"] == str(folder.resolve())  # recorded absolute
    run = RunDir(tmp_path / "run")
    _record(run, "dp", entry)
    monkeypatch.chdir(tmp_path / "run")  # evaluate or audit started elsewhere
    assert warm_start.reference(run, ["dp"])[0] == folder.resolve()


def test_membership_inference_scores_against_the_warm_start(tmp_path, tokenizer, tiny_model_dir, monkeypatch):
    folder, _ = _warm_adapter(tmp_path, tokenizer, LoraSettings())
    cfg = load_config(None, [f"model.name={tiny_model_dir}", *SMALL, f"train.init_adapter={folder}"])
    run, inputs = trained_run(cfg, tmp_path / "run")
    assert inputs.model_arms == ["dp", "no_dp"]
    # scored in float32, to compare with float32 losses below (bf16 scoring: tests/evaluate/test_scoring_precision.py)
    cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"precision": "float32"})})

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real_attack = mp_module.reference_attack

    def spy(member_target, member_ref, nonmember_target, nonmember_ref, **kw):
        seen.append((np.asarray(member_ref), np.asarray(nonmember_ref)))
        return real_attack(member_target, member_ref, nonmember_target, nonmember_ref, **kw)

    monkeypatch.setattr(mp_module, "reference_attack", spy)
    tables = mp_module.model_privacy(cfg, run, inputs, MetricList(), {})
    assert str(folder) in tables["mia"]["reference_model"]

    members, nonmembers = mp_module._mia_units(inputs, cfg.evaluate.mia_max_records, cfg.evaluate.seed)
    tok = load_tokenizer(cfg.model)
    batch = cfg.evaluate.score_batch_tokens
    scorers = [mp_module.UnitScorer(tok, u, inputs.info, batch) for u in (members, nonmembers)]
    warm = attach_adapter(load_model(cfg.model), folder)
    want = [s.losses(warm) for s in scorers]
    bare = [s.losses(load_model(cfg.model)) for s in scorers]
    assert len(seen) == 2  # one per arm
    for member_ref, nonmember_ref in seen:
        np.testing.assert_allclose(member_ref, want[0], rtol=1e-5)
        np.testing.assert_allclose(nonmember_ref, want[1], rtol=1e-5)
    assert not np.allclose(want[0], bare[0])  # the warm start moves the losses: the test tells the two apart


def test_the_audit_scores_against_the_warm_start(tmp_path, tokenizer, tiny_model_dir):
    folder, _ = _warm_adapter(tmp_path, tokenizer, LoraSettings())
    cfg = load_config(
        None,
        [
            f"model.name={tiny_model_dir}",
            *SMALL,
            "privacy.target_epsilon=1.5",
            "audit.num_canaries=20",
            "audit.canary_tokens=6",
            "audit.no_dp_epochs=1",
            f"train.init_adapter={folder}",
        ],
    )
    out = tmp_path / "run"
    api.prepare(cfg, out)
    summary = api.audit(cfg, out, progress=False)
    assert str(folder) in summary["reference_model"]
    assert audit_run.metrics_entry(summary)["reference_model"] == summary["reference_model"]  # the report shows it
    audit = RunDir(RunDir(out).audit_dir)
    canaries, _ = audit_run.read_canaries_with_coins(audit)
    info = read_json(audit.prepare_json)
    kwargs = {"system_prompt": info["system_prompt"], "max_tokens": info["max_tokens"], "batch_size": 5}
    tok = load_tokenizer(cfg.model)
    warm = canary_losses(attach_adapter(load_model(cfg.model), folder), tok, canaries, **kwargs)
    bare = canary_losses(load_model(cfg.model), tok, canaries, **kwargs)
    rows = read_jsonl(audit.root / "scores.jsonl")
    np.testing.assert_allclose([r["loss_base"] for r in rows], warm, rtol=1e-5)
    assert not np.allclose(warm, bare)

    # the warm start retrained in place: the audit's arms began from other weights, so they are trained again
    weights = folder / "adapter_model.safetensors"
    save_file({k: v + 1 for k, v in load_file(str(weights)).items()}, str(weights))
    again = api.audit(cfg, out, progress=False)
    assert not any(arm["training"]["reused"] for arm in again["arms"].values())
    assert str(folder) in again["reference_model"]
