"""The command line, through typer's runner: help text, errors with exit codes, nothing half-written."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dpsynth import api
from dpsynth.cli import app
from dpsynth.errors import DPSynthError
from dpsynth.rundir import RunDir, read_json, write_text

runner = CliRunner()
HEAVY = ("torch", "transformers", "opacus", "peft", "sentence_transformers", "sklearn", "mauve", "faiss", "mlflow")


def _invoke(*args: str, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def _command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as argument lists (``[]`` is the top level)."""
    from typer.main import get_command

    paths: list[list[str]] = []

    def walk(cmd, path):
        paths.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return paths


# In a fresh interpreter: the help of every command and two configuration errors, then which heavy modules got loaded.
_LIGHT_SCRIPT = """
import json, sys
from typer.testing import CliRunner
from dpsynth.cli import app
paths, out, heavy = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
codes = [CliRunner().invoke(app, [*p, "--help"]).exit_code for p in paths]
for args in (["prepare", "--out", out, "trian.max_steps=2"], ["run", "--out", out, "train.max_step=2"]):
    result = CliRunner().invoke(app, args)
    codes.append(result.exit_code if "did you mean train.max_steps?" in result.output else "no suggestion")
print(json.dumps({"codes": codes, "heavy": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_help_and_config_errors_import_no_heavy_library(tmp_path):
    """`dpsynth --help` took 4-24 s when importing the CLI pulled in opacus and torch (dpsynth.privacy.cli)."""
    probe = f"import dpsynth.cli, sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]", imported.stdout + imported.stderr

    paths = _command_paths()
    assert ["budget", "set"] in paths and ["evaluate"] in paths
    args = [json.dumps(paths), str(tmp_path / "run"), json.dumps(HEAVY)]
    done = subprocess.run([sys.executable, "-c", _LIGHT_SCRIPT, *args], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0] * len(paths) + [2, 2], report
    assert report["heavy"] == [], f"--help or a config error imported {report['heavy']}"
    assert not (tmp_path / "run").exists()

    start = time.monotonic()
    shown = subprocess.run([sys.executable, "-m", "dpsynth.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "prepare" in shown.stdout
    assert time.monotonic() - start < 20  # generous (busy 2-core machine); was 4-24 s with torch imported


def test_flags_show_no_bool_metavar_in_any_help():
    for path in _command_paths():
        result = _invoke(*path, "--help")
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.output, f"dpsynth {' '.join(path)} --help shows <bool>"
    assert "--resume" in _invoke("train", "--help").output


def test_top_level_help_lists_every_stage():
    result = _invoke("--help")
    assert "prepare -> train -> generate -> evaluate" in result.output
    for command in ("audit", "budget", "run", "evaluate"):
        assert command in result.output


@pytest.mark.parametrize(
    ("override", "written"),
    [("train.max_step=2", "train.max_step"), ("trian.max_steps=2", "trian.max_steps"), ("train.max_stepz=2", None)],
)
def test_an_unknown_key_gets_the_nearest_valid_one(tmp_path, override, written):
    result = _invoke("prepare", "--out", tmp_path / "run", override)
    assert result.exit_code == 2
    assert f"{written or override.split('=')[0]}: unknown key (did you mean train.max_steps?)" in result.stderr
    assert not (tmp_path / "run").exists()


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
    assert not out.exists()  # not even DIR/config.yaml in the directory it created


@pytest.mark.parametrize("command", ["prepare", "run", "generate", "evaluate"])
def test_a_failing_command_leaves_no_directory_it_created(tmp_path, command):
    out = tmp_path / "new" / "run"
    result = _invoke(command, "--out", out, "-q", f"data.path={tmp_path / 'nope.jsonl'}")
    assert result.exit_code == 2, result.output
    assert not out.exists() and not out.parent.exists()

    existing = tmp_path / "mine"  # a directory that existed before is never removed
    write_text(existing / "notes.txt", "keep me")
    assert _invoke(command, "--out", existing, "-q", f"data.path={tmp_path / 'nope.jsonl'}").exit_code == 2
    assert (existing / "notes.txt").read_text() == "keep me"


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
    assert not out.exists()
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
    prepared = _invoke("prepare", flag, out, "data.demo_records=60", *common)
    assert prepared.exit_code == 0, prepared.output
    # the summary says what was dropped and why, from prepare.json's counts (on stdout: it is a result)
    counts = read_json(RunDir(out).prepare_json)["counts"]
    dropped = counts["dropped"]
    assert dropped.get("over_user_bound", 0) > 0  # the demo's users write several reviews each
    assert f"dropped {sum(dropped.values())} of {counts['read']} records read:" in prepared.stdout
    assert f"{dropped['over_user_bound']} over the per-user bound (data.max_records_per_user=1" in prepared.stdout
    # later stages read the saved config.yaml; overrides still apply on top. No COLUMNS and no terminal: the table
    # must not be cut at 80 columns ("accounta…")
    result = _invoke("train", flag, out, "--quiet", "train.arms=[dp]", env={"COLUMNS": None})
    assert result.exit_code == 0, result.output
    for header in ("epsilon", "sample rate", "accountant"):
        assert header in result.stdout
    assert "…" not in result.stdout
    result = _invoke("generate", flag, out, "--quiet", "generate.arms=[dp]", "generate.max_new_tokens=4")
    assert result.exit_code == 0, result.output
    assert len(Path(RunDir(out).generated("dp")).read_text().splitlines()) == 3


def _fake_evaluate(cfg, out, *, progress=True):
    """Stands in for the evaluation (whose own tests are in tests/evaluate): writes a report, returns a metric."""
    write_text(RunDir(out).report_html, "<html></html>")
    return {"metrics": [{"name": "mauve", "arm": "dp", "value": 0.5}], "timing_s": {"total": 1.0}}


def test_run_prints_each_summary_as_its_stage_ends_then_the_paths(tmp_path, tiny_model_dir, monkeypatch):
    out = tmp_path / "run"
    args = [f"model.name={tiny_model_dir}", "data.demo_records=60", "train.max_steps=1", "train.batch_size=8"]
    args += ["generate.num_records=2", "generate.max_new_tokens=2"]
    printed_before_evaluation = []

    def evaluate(cfg, out, *, progress=True):
        printed_before_evaluation.append(True)
        raise DPSynthError("evaluation failed")

    monkeypatch.setattr(api, "evaluate", evaluate)
    failed = _invoke("run", "--out", out, *args)
    assert failed.exit_code == 2 and printed_before_evaluation
    # the stages that finished were summarised although the run failed later (summaries used to come at the end)
    for summary in ("prepared:", "Training", "generated dp:", "generated no_dp:"):
        assert summary in failed.stdout
    assert "evaluation failed" in failed.stderr and "evaluation failed" not in failed.stdout
    assert "generate dp" in failed.stderr and "generate no_dp" in failed.stderr  # the progress bars name the arm
    assert RunDir(out).prepare_json.is_file()  # a finished stage is kept for --resume

    monkeypatch.setattr(api, "evaluate", _fake_evaluate)
    result = _invoke("run", "--out", out, "--quiet", "--resume", *args)
    assert result.exit_code == 0, result.output
    stdout = result.stdout
    order = ["run directory:", "Training", "generated dp:", "Evaluation", "report:", "synthetic dp:"]
    positions = [stdout.index(marker) for marker in order]
    assert positions == sorted(positions), stdout
    assert str(RunDir(out).report_html) in stdout and str(RunDir(out).generated("dp")) in stdout


def test_logging_keeps_librarys_import_chatter_out(monkeypatch):
    """INFO shows dpsynth's progress; faiss's loader (which SIMD builds it could not import) stays out of it."""
    import logging

    from dpsynth import cli

    monkeypatch.setattr(logging.getLogger("faiss.loader"), "level", logging.NOTSET)
    cli._setup_logging(quiet=False)
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    assert logging.getLogger("faiss.loader").isEnabledFor(logging.WARNING)
