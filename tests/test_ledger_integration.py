"""The ledger as the train stage uses it: releases compose, overspending is refused, crashes neither lose nor double."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpsynth import api
from dpsynth.cli import app
from dpsynth.config import load_config
from dpsynth.privacy.ledger import Ledger
from dpsynth.rundir import RunDir, read_json
from dpsynth.train import loop as loop_module

runner = CliRunner()
PLANTED = "Zorblax Quintavious lives at 42 Secretstreet"


def _write_source(path: Path, n: int = 60) -> Path:
    rows = []
    for i in range(n):
        text = f"Review number {i}: the case fits my phone well and the buttons work, rating {1 + i % 5}."
        if i == 3:
            text = f"{PLANTED}. The charger stopped working after a week, very disappointed."
        rows.append({"text": text, "rating": 1 + i % 5, "user": f"user{i}"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _overrides(model_dir: Path, source: Path) -> list[str]:
    return [
        f"model.name={model_dir}",
        f"data.path={source}",
        "data.schema=generic",
        "data.fields.user=user",
        "data.fields.codes={rating: rating}",
        "data.code_domains={rating: [1, 2, 3, 4, 5]}",
        "data.test_fraction=0.05",  # keep the planted record in training with high probability (checked below)
        "privacy.target_epsilon=2",
        "train.arms=[dp]",
        "generate.arms=[dp]",
        "train.batch_size=8",
        "train.max_steps=2",
        "train.checkpoint_every=1",
    ]


def test_releases_compose_and_an_overspending_run_is_refused_before_touching_data(
    tmp_path, tiny_model_dir, monkeypatch
):
    source = _write_source(tmp_path / "reviews.jsonl")
    over = _overrides(tiny_model_dir, source)
    for name in ("a", "b"):
        assert runner.invoke(app, ["prepare", "--out", str(tmp_path / name), *over]).exit_code == 0
    fingerprint = read_json(RunDir(tmp_path / "a").prepare_json)["source"]["fingerprint"]
    assert fingerprint == read_json(RunDir(tmp_path / "b").prepare_json)["source"]["fingerprint"]

    for name in ("a", "b"):
        result = runner.invoke(app, ["train", "--out", str(tmp_path / name), "--quiet"])
        assert result.exit_code == 0, result.output
    ledger = Ledger(os.environ["DPSYNTH_LEDGER"])
    releases = ledger.releases(fingerprint)
    assert len(releases) == 2
    a, b = (read_json(RunDir(tmp_path / n).privacy_json("dp")) for n in ("a", "b"))
    assert a["ledger"]["entry"] == releases[0].id and b["ledger"]["entry"] == releases[1].id
    assert a["ledger"]["status"] == b["ledger"]["status"] == "committed"
    # composition by the accountant over both mechanism histories: more than one release, less than the sum
    composed = b["ledger"]["composed_epsilon"]
    assert b["epsilon"] < composed < a["epsilon"] + b["epsilon"]

    # Composition is sublinear (two epsilon-2 releases compose to ~2.4 under PRV), so leave only a sliver: a third
    # epsilon-2 release must not fit in it.
    budget = composed + 0.05
    result = runner.invoke(app, ["budget", "set", fingerprint, "--epsilon", str(budget), "--delta", str(b["delta"])])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["prepare", "--out", str(tmp_path / "c"), *over]).exit_code == 0

    def must_not_run(*args, **kwargs):
        raise AssertionError("the refused run read the data or loaded the model")

    monkeypatch.setattr("dpsynth.train.stage.read_records", must_not_run)
    monkeypatch.setattr("dpsynth.models.loader.load_tokenizer", must_not_run)
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "c"), "--quiet"])
    assert result.exit_code == 3, result.output
    assert "spend" in result.output and "is left" in result.output and "Nothing was recorded" in result.output
    assert not RunDir(tmp_path / "c").arm("dp").exists()
    assert len(ledger.releases(fingerprint, include_pending=True)) == 2

    shown = runner.invoke(app, ["budget", "show", fingerprint])
    assert shown.exit_code == 0 and str(releases[1].id) in shown.output


def test_a_crash_between_privacy_json_and_the_commit_is_finished_by_resume(tmp_path, tiny_model_dir, monkeypatch):
    source = _write_source(tmp_path / "reviews.jsonl")
    cfg = load_config(None, _overrides(tiny_model_dir, source))
    out = tmp_path / "run"
    api.prepare(cfg, out)

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    with monkeypatch.context() as m:
        m.setattr(Ledger, "commit", crash)
        with pytest.raises(RuntimeError, match="power cut"):
            api.train(cfg, out, progress=False)
    run = RunDir(out)
    assert read_json(run.privacy_json("dp"))["ledger"]["status"] == "pending"
    ledger = Ledger(os.environ["DPSYNTH_LEDGER"])
    assert ledger.releases() == []  # a reservation, not a release

    def refuse(*args, **kwargs):
        raise AssertionError("resume trained a finished arm again")

    monkeypatch.setattr("dpsynth.train.stage.train_arm", refuse)
    api.train(cfg, out, resume=True, progress=False)
    releases = ledger.releases(include_pending=True)
    assert len(releases) == 1 and releases[0].status == "committed"
    assert read_json(run.privacy_json("dp"))["ledger"]["status"] == "committed"
    api.train(cfg, out, resume=True, progress=False)  # idempotent
    assert len(ledger.releases(include_pending=True)) == 1


def test_no_raw_training_text_in_logs_checkpoints_prepare_json_or_the_ledger(
    tmp_path, tiny_model_dir, monkeypatch, caplog
):
    source = _write_source(tmp_path / "reviews.jsonl")
    cfg = load_config(None, [*_overrides(tiny_model_dir, source), "train.max_steps=3"])
    out = tmp_path / "run"
    caplog.set_level(logging.DEBUG)
    api.prepare(cfg, out)
    run = RunDir(out)
    assert PLANTED in run.train.read_text(encoding="utf-8")  # the planted record is in the training split

    original = loop_module.ArmTrainer._after_step

    def stop_at_two(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.state.step == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loop_module.ArmTrainer, "_after_step", stop_at_two)
        result = runner.invoke(app, ["train", "--out", str(out)])
    assert result.exit_code == 130
    checkpoint_meta = (run.checkpoints("dp") / "meta.json").read_text(encoding="utf-8")
    resumed = runner.invoke(app, ["train", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output

    needle = "Zorblax"
    inspected = {
        "checkpoint meta.json": checkpoint_meta,
        "CLI output": result.output + resumed.output,
        "log records": caplog.text,
    }
    for path in (run.prepare_json, run.train_log("dp"), run.privacy_json("dp"), run.control_codes("dp"), run.config):
        inspected[path.name] = path.read_text(encoding="utf-8")
    ledger_path = Path(os.environ["DPSYNTH_LEDGER"])
    for p in ledger_path.parent.glob(ledger_path.name + "*"):  # the database and its WAL
        inspected[p.name] = p.read_bytes().decode("latin-1")
    for name, text in inspected.items():
        assert needle not in text, f"planted private text found in {name}"


def test_a_budget_set_on_the_data_file_limits_the_runs_on_that_file(tmp_path, tiny_model_dir):
    """`dpsynth budget set PATH` used to budget the string PATH, which no run is charged to: it protected nothing."""
    source = _write_source(tmp_path / "reviews.jsonl")
    over = _overrides(tiny_model_dir, source)
    reading = [o for o in over if o.startswith("data.")]  # how the runs read the file
    result = runner.invoke(app, ["budget", "set", str(source), "--epsilon", "1", "--delta", "1e-5", *reading])
    assert result.exit_code == 0, result.output

    assert runner.invoke(app, ["prepare", "--out", str(tmp_path / "a"), *over]).exit_code == 0
    fingerprint = read_json(RunDir(tmp_path / "a").prepare_json)["source"]["fingerprint"]
    assert f"{source} is the data file" in result.stdout and f"source {fingerprint}" in result.stdout
    ledger = Ledger(os.environ["DPSYNTH_LEDGER"])
    assert ledger.sources() == [fingerprint]  # the budget is on the fingerprint, not on the path

    refused = runner.invoke(app, ["train", "--out", str(tmp_path / "a"), "--quiet"])  # epsilon 2 > the budget of 1
    assert refused.exit_code == 3, refused.output
    assert f"privacy budget of source {fingerprint} exceeded" in refused.output
    assert ledger.releases(fingerprint, include_pending=True) == []
