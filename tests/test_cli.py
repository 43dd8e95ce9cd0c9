"""The command line, through typer's runner: help text, errors with exit codes, nothing half-written."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpsynth.cli import app
from dpsynth.rundir import RunDir

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_documents_every_stage():
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "prepare", "train", "generate"):
        assert command in result.output
    train_help = _invoke("train", "--help").output
    assert "--resume" in train_help and "key.sub=value" in train_help


def test_non_positive_epsilon_is_refused_with_the_key_named(tmp_path):
    result = _invoke("prepare", "--out", tmp_path / "run", "privacy.target_epsilon=0")
    assert result.exit_code != 0
    assert "privacy.target_epsilon" in result.output
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_is_refused(tmp_path):
    result = _invoke("prepare", "--out", tmp_path / "run", "train.max_stepz=3")
    assert result.exit_code != 0
    assert "train.max_stepz" in result.output


def test_missing_data_file_names_the_file_and_writes_nothing(tmp_path):
    missing = tmp_path / "nope.jsonl"
    out = tmp_path / "run"
    result = _invoke("prepare", "--out", out, f"data.path={missing}")
    assert result.exit_code != 0
    assert "nope.jsonl" in result.output
    assert not RunDir(out).train.exists() and not RunDir(out).prepare_json.exists()


def test_malformed_jsonl_line_names_file_and_line_and_writes_nothing(tmp_path):
    path = tmp_path / "reviews.jsonl.gz"
    good = {"reviewText": "A perfectly fine phone case, fits well.", "overall": 5, "reviewerID": "A1", "asin": "B1"}
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(good) + "\n")
        fh.write('{"reviewText": "broken\n')
    out = tmp_path / "run"
    result = _invoke("prepare", "--out", out, f"data.path={path}", "data.schema=amazon2014")
    assert result.exit_code != 0
    assert "reviews.jsonl.gz:2" in result.output
    assert not RunDir(out).train.exists()
    assert "broken" not in result.output  # the message names the place, never the content


def test_missing_field_is_named(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("overall,reviewerID,asin\n5,A1,B1\n4,A2,B2\n", encoding="utf-8")
    result = _invoke("prepare", "--out", tmp_path / "run", f"data.path={path}", "data.schema=amazon2014")
    assert result.exit_code != 0
    assert "reviewText" in result.output


def test_empty_data_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("", encoding="utf-8")
    result = _invoke("prepare", "--out", tmp_path / "run", f"data.path={path}", "data.schema=amazon2014")
    assert result.exit_code != 0
    assert "empty.jsonl" in result.output


def test_train_before_prepare_says_what_to_do(tmp_path):
    result = _invoke("train", "--out", tmp_path / "run")
    assert result.exit_code != 0
    assert "dpsynth prepare" in result.output


@pytest.mark.parametrize("flag", ["--out", "--run"])
def test_prepare_then_train_then_generate_on_a_run_directory(tmp_path, tiny_model_dir, flag):
    out = tmp_path / "run"
    common = [f"model.name={tiny_model_dir}", "train.max_steps=2", "train.batch_size=8", "generate.num_records=3"]
    assert _invoke("prepare", flag, out, "data.demo_records=60", *common).exit_code == 0
    # later stages read the saved config.yaml; overrides still apply on top
    result = _invoke("train", flag, out, "--quiet", "train.arms=[dp]")
    assert result.exit_code == 0, result.output
    assert "epsilon" in result.output
    result = _invoke("generate", flag, out, "--quiet", "generate.arms=[dp]", "generate.max_new_tokens=4")
    assert result.exit_code == 0, result.output
    assert len(Path(RunDir(out).generated("dp")).read_text().splitlines()) == 3
