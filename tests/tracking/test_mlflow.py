"""Experiment tracking against a real local MLflow store (sqlite), on a tiny pipeline run end to end.

One run directory per module: a generic-schema source with a planted record, a tiny random Llama, both arms, two
steps each, a small evaluation, ``tracking.mlflow=sqlite:///...``. The tests read the store back with
``MlflowClient`` and search every byte of it (database and artifacts) for the planted record.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient  # the `tracking` extra, part of `dev`
from typer.testing import CliRunner

from dpsynth import api
from dpsynth.cli import app
from dpsynth.config import load_config
from dpsynth.rundir import RunDir, read_json, read_jsonl
from dpsynth.tracking.mlflow_run import RUN_FILE

PLANTED = "Zorblax Quintavious lives at 42 Secretstreet"
EXPERIMENT = "dpsynth-test"


def _source(path: Path, n: int = 60) -> Path:
    rows = []
    for i in range(n):
        text = f"Review number {i}: the case fits my phone well and the buttons work, rating {1 + i % 5}."
        if i == 3:
            text = f"{PLANTED}. The charger stopped working after a week, very disappointed."
        rows.append({"text": text, "rating": 1 + i % 5, "user": f"user{i}"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _overrides(model_dir: Path, source: Path, uri: str) -> list[str]:
    return [
        f"model.name={model_dir}",
        f"data.path={source}",
        "data.schema=generic",
        "data.fields.user=user",
        "data.fields.codes={rating: rating}",
        "data.code_domains={rating: [1, 2, 3, 4, 5]}",
        "data.test_fraction=0.2",
        "data.max_tokens=32",
        "privacy.target_epsilon=4",
        "train.batch_size=8",
        "train.physical_batch_size=8",
        "train.max_steps=2",
        "train.noise_seed=3",  # seeds the Poisson batches too: an empty step (p ~ 3e-4 over 2 steps) logs no loss
        "generate.num_records=8",
        "generate.max_new_tokens=8",
        "generate.batch_size=8",
        "evaluate.max_records=20",
        "evaluate.exposure_candidates=10",
        "evaluate.exposure_canaries=1",
        "evaluate.mia_max_records=8",
        "evaluate.num_samples=2",
        f"tracking.mlflow={uri}",
        f"tracking.experiment={EXPERIMENT}",
    ]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_model_dir) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tracked")
    store = root / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    over = _overrides(tiny_model_dir, _source(root / "reviews.jsonl"), uri)
    with pytest.MonkeyPatch.context() as mp:  # a module fixture runs outside the per-test ledger isolation
        mp.setenv("DPSYNTH_LEDGER", str(root / "ledger.sqlite"))
        mp.chdir(root)  # MLflow must not write into the working folder (./mlruns): checked below
        results = api.run_pipeline(load_config(None, over), root / "run", progress=False)
    return {"root": root, "store": store, "uri": uri, "run": RunDir(root / "run"), "results": results, "over": over}


def _the_run(client: MlflowClient) -> Any:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def test_config_training_curves_privacy_metrics_and_report_are_logged(tracked_run):
    run: RunDir = tracked_run["run"]
    client = MlflowClient(tracking_uri=tracked_run["uri"])
    mlrun = _the_run(client)
    run_id = mlrun.info.run_id
    assert read_json(run.root / RUN_FILE)["run_id"] == run_id
    assert mlrun.info.status == "FINISHED"
    assert mlrun.info.run_name == "run"

    params = mlrun.data.params
    assert params["train.batch_size"] == "8" and params["privacy.target_epsilon"] == "4.0"
    assert params["tracking.mlflow"] == tracked_run["uri"]
    assert params["data.code_domains.rating"] == "[1, 2, 3, 4, 5]"

    for arm in ("dp", "no_dp"):  # per-step loss, as train_log.jsonl has it
        rows = read_jsonl(run.train_log(arm))
        history = client.get_metric_history(run_id, f"train/{arm}/loss")
        history = sorted(history, key=lambda m: m.step)
        assert [m.step for m in history] == [r["step"] for r in rows] == [1, 2]
        assert [m.value for m in history] == pytest.approx([r["loss"] for r in rows])
    privacy = read_json(run.privacy_json("dp"))
    eps = client.get_metric_history(run_id, "train/dp/epsilon")
    assert [m.step for m in sorted(eps, key=lambda m: m.step)] == [1, 2]
    assert max(eps, key=lambda m: m.step).value == pytest.approx(privacy["epsilon"])
    assert client.get_metric_history(run_id, "train/no_dp/epsilon") == []

    metrics = mlrun.data.metrics
    for key in ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "max_grad_norm", "histogram_sigma"):
        assert metrics[f"privacy/dp/{key}"] == pytest.approx(privacy[key]), key
    assert metrics["privacy/dp/ledger/composed_epsilon"] == pytest.approx(privacy["ledger"]["composed_epsilon"])
    assert mlrun.data.tags["privacy.dp.accountant"] == privacy["accountant"]
    assert mlrun.data.tags["privacy.no_dp.dp"] == "False"

    doc = read_json(run.metrics_json)
    numeric = {
        f"eval/{m['arm']}/{m['name']}": m["value"]
        for m in doc["metrics"]
        if isinstance(m["value"], int | float) and math.isfinite(m["value"])
    }
    assert len(numeric) > 30
    logged = {k: v for k, v in metrics.items() if k.startswith("eval/") and not k.startswith("eval/timing_s/")}
    assert logged == pytest.approx(numeric)
    assert metrics["eval/timing_s/total"] == pytest.approx(doc["timing_s"]["total"])

    artifacts = Path(client.download_artifacts(run_id, "", str(tracked_run["root"] / "downloaded")))
    assert (artifacts / "report.html").read_bytes() == run.report_html.read_bytes()
    assert (artifacts / "config" / "train.yaml").read_text() == run.config.read_text()
    assert (artifacts / "config" / "evaluate.yaml").is_file()
    assert json.loads((artifacts / "privacy" / "dp.json").read_text())["epsilon"] == privacy["epsilon"]
    # artifacts live beside the sqlite database, never in the working folder
    assert (tracked_run["store"] / "mlartifacts").is_dir() and not (tracked_run["root"] / "mlruns").exists()


def test_no_private_record_reaches_the_store(tracked_run):
    run: RunDir = tracked_run["run"]
    train_texts = [r["text"] for r in read_jsonl(run.train)]
    assert any(PLANTED in t for t in train_texts)  # the planted record was trained on: the search below means something
    client = MlflowClient(tracking_uri=tracked_run["uri"])
    mlrun = _the_run(client)
    logged = [*mlrun.data.params.values(), *mlrun.data.tags.values(), *mlrun.data.params, *mlrun.data.metrics]
    assert not [v for v in logged if PLANTED in v]
    # every byte of the store (the sqlite database and the artifact folder), not only what the client shows
    files = [p for p in tracked_run["store"].rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files) and any(p.suffix == ".db" for p in files)
    needles = [PLANTED.encode(), *(t[:40].encode() for t in train_texts)]
    for path in files:
        data = path.read_bytes()
        assert not [n for n in needles if n in data], path


def test_a_later_stage_logs_to_the_same_run_and_records_a_changed_setting(tracked_run):
    run: RunDir = tracked_run["run"]
    # resume of finished arms trains nothing (cheap) but is a tracked stage; one setting differs from the params
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DPSYNTH_LEDGER", str(tracked_run["root"] / "ledger.sqlite"))
        api.train(load_config(None, [*tracked_run["over"], "train.checkpoint_every=7"]), run.root, resume=True)
    client = MlflowClient(tracking_uri=tracked_run["uri"])
    mlrun = _the_run(client)  # still one run
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["train.checkpoint_every"] == "1"  # params are immutable: the first value stays
    assert mlrun.data.tags["config_changed.train.checkpoint_every"] == "train: 7"


def test_tracking_without_mlflow_installed_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["evaluate", "--out", str(out), f"tracking.mlflow=sqlite:///{tmp_path}/m.db"])
    assert result.exit_code == 2, result.output
    assert "MLflow is not installed" in result.output and "dpsynth[tracking]" in result.output
    assert not out.exists()  # the failed command left nothing behind
