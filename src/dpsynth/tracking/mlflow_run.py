"""MLflow as the tracker: one MLflow run per run directory, appended to by each stage.

Only :func:`dpsynth.tracking.tracked` imports this module, and only when ``tracking.mlflow`` is set, so MLflow stays an
optional extra. It goes through ``MlflowClient`` (explicit tracking URI and run id) rather than the fluent
``mlflow.start_run`` API, so that tracking changes no process-wide state of a user's own MLflow session.

Names: params are the resolved config flattened (``train.batch_size``); metrics are ``train/ARM/loss`` and
``train/ARM/epsilon`` by step, ``privacy/ARM/KEY`` from ``privacy.json``, ``eval/ARM/NAME`` for every number of
``metrics.json`` and ``eval/timing_s/KEY``; artifacts are ``config/STAGE.yaml``, ``privacy/ARM.json`` and
``report.html``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from dpsynth import __version__
from dpsynth.config import Config
from dpsynth.errors import ConfigError
from dpsynth.rundir import RunDir, dumps, read_json, write_json
from dpsynth.tracking import Tracker

log = logging.getLogger(__name__)

RUN_FILE = "tracking.json"
"""``DIR/tracking.json``: the tracking URI, experiment and MLflow run id, so that later stages log to the same run."""

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH = 100  # MLflow's limit on params per log_batch call (metrics: 1000)
PRIVACY_SKIP = {"checks", "mechanisms", "source", "ledger"}
"""privacy.json keys not logged as metrics: structured, or local paths; the whole file is logged as an artifact."""


def _import_mlflow() -> Any:
    # MLflow 3 collects usage telemetry by default; a privacy tool should not phone home on the user's behalf.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        import mlflow
    except ImportError as exc:
        raise ConfigError(
            "tracking.mlflow is set but MLflow is not installed: pip install 'dpsynth[tracking]' "
            "(or unset tracking.mlflow)"
        ) from exc
    return mlflow


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as ``dotted.key -> value`` strings (lists and mappings below a leaf as JSON).

    >>> flatten({"train": {"batch_size": 8, "lora": {"target_modules": ["q_proj"]}}, "x": None})
    {'train.batch_size': '8', 'train.lora.target_modules': '["q_proj"]', 'x': 'null'}
    """
    out: dict[str, str] = {}
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    if len(text) > MAX_PARAM_CHARS:  # the whole config is also logged as config/STAGE.yaml
        text = text[: MAX_PARAM_CHARS - 3] + "..."
    return {prefix: text}


def metric_key(*parts: str) -> str:
    """An MLflow metric name: the parts joined by ``/``, characters MLflow refuses replaced by ``_``.

    >>> metric_key("eval", "dp", "fidelity.genre (v2).kl")
    'eval/dp/fidelity.genre _v2_.kl'
    """
    return "/".join(re.sub(r"[^\w\-. :/]", "_", p) for p in parts)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _default_artifact_location(uri: str) -> str | None:
    """For ``sqlite:///PATH``, artifacts beside the database (MLflow would use ./mlruns in the working folder)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()


class MlflowTracker(Tracker):
    """Logs one stage of one run directory to its MLflow run. Opened by :meth:`open`, ended by :meth:`close`."""

    def __init__(self, client: Any, run_id: str, stage: str, cfg: Config) -> None:
        self.client = client
        self.run_id = run_id
        self.stage = stage
        self.cfg = cfg
        self._warned = False

    @classmethod
    def open(cls, cfg: Config, run: RunDir, stage: str) -> MlflowTracker:
        """The MLflow run of ``run`` (created on first use, else the one ``DIR/tracking.json`` names), set running."""
        _import_mlflow()
        from mlflow.tracking import MlflowClient

        t = cfg.tracking
        assert t.mlflow is not None
        client = MlflowClient(tracking_uri=t.mlflow)
        run_id = cls._existing_run(client, run, t.mlflow, t.experiment)
        if run_id is None:
            experiment = client.get_experiment_by_name(t.experiment)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                location = t.artifact_location or _default_artifact_location(t.mlflow)
                experiment_id = client.create_experiment(t.experiment, artifact_location=location)
            created = client.create_run(
                experiment_id,
                run_name=t.run_name or run.root.resolve().name,
                tags={"dpsynth.run_dir": str(run.root.resolve()), "dpsynth.version": __version__},
            )
            run_id = created.info.run_id
            write_json(run.root / RUN_FILE, {"uri": t.mlflow, "experiment": t.experiment, "run_id": run_id})
            log.info("tracking: MLflow run %s in experiment %r at %s", run_id, t.experiment, t.mlflow)
        else:
            client.update_run(run_id, status="RUNNING")
        tracker = cls(client, run_id, stage, cfg)
        tracker._log_config()
        return tracker

    @staticmethod
    def _existing_run(client: Any, run: RunDir, uri: str, experiment: str) -> str | None:
        path = run.root / RUN_FILE
        if not path.is_file():
            return None
        saved = read_json(path)
        if saved.get("uri") != uri or saved.get("experiment") != experiment:
            return None  # tracked elsewhere before: start a run in the store configured now
        try:
            found = client.get_run(saved["run_id"])
        except Exception:  # deleted, or another store at the same URI: start afresh
            return None
        return None if found.info.lifecycle_stage == "deleted" else str(saved["run_id"])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)

    # -- what is logged -----------------------------------------------------------------------------------------------

    def _log_config(self) -> None:
        """Params: the flattened config. A key logged by an earlier stage with another value (MLflow params are
        immutable) is recorded as the tag ``config_changed.KEY``; each stage's whole config is an artifact."""
        from mlflow.entities import Param, RunTag

        flat = flatten(self.cfg.model_dump(mode="json", by_alias=True))
        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        changed = [
            RunTag(f"config_changed.{k}", f"{self.stage}: {v}") for k, v in flat.items() if existing.get(k, v) != v
        ]
        for i in range(0, len(new), BATCH):
            self.client.log_batch(self.run_id, params=new[i : i + BATCH])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)
            log.info("tracking: %d config values differ from the run's params (tags config_changed.*)", len(changed))
        self.client.log_text(self.run_id, self.cfg.to_yaml(), f"config/{self.stage}.yaml")
        self.client.set_tag(self.run_id, f"dpsynth.stage.{self.stage}", time.strftime("%Y-%m-%dT%H:%M:%S"))

    def _metrics(self, values: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log_step(self, arm: str, row: dict[str, Any]) -> None:
        values = {metric_key("train", arm, k): v for k in ("loss", "epsilon") if (v := _number(row.get(k))) is not None}
        if not values:
            return
        try:
            self._metrics(values, step=int(row["step"]))
        except Exception as exc:  # a tracking hiccup must not kill hours of DP training (the log is in DIR anyway)
            if not self._warned:
                log.warning("tracking: could not log training step %s (%s); training goes on", row.get("step"), exc)
                self._warned = True

    def log_privacy(self, arm: str, privacy: dict[str, Any]) -> None:
        values: dict[str, float] = {}
        tags: dict[str, str] = {}
        for key, value in privacy.items():
            if key in PRIVACY_SKIP:
                continue
            if isinstance(value, dict):
                for sub, v in value.items():
                    if (num := _number(v)) is not None:
                        values[metric_key("privacy", arm, f"{key}.{sub}")] = num
            elif (num := _number(value)) is not None:
                values[metric_key("privacy", arm, key)] = num
            elif isinstance(value, str | bool):
                tags[f"privacy.{arm}.{key}"] = str(value)
        ledger = privacy.get("ledger") or {}
        for key in ("composed_epsilon", "composed_delta"):
            if (num := _number(ledger.get(key))) is not None:
                values[metric_key("privacy", arm, "ledger", key)] = num
        self._metrics(values)
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        self.client.log_text(self.run_id, dumps(privacy), f"privacy/{arm}.json")

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        values: dict[str, float] = {}
        for m in metrics.get("metrics", []):
            if (num := _number(m.get("value"))) is not None:
                values[metric_key("eval", str(m["arm"]), str(m["name"]))] = num
        for key, value in (metrics.get("timing_s") or {}).items():
            if (num := _number(value)) is not None:
                values[metric_key("eval", "timing_s", str(key))] = num
        self._metrics(values)

    def log_report(self, path: Path) -> None:
        if self.cfg.tracking.log_report and path.is_file():
            self.client.log_artifact(self.run_id, str(path))
