"""Experiment tracking: a run's configuration, training curves, privacy summary, metrics and report, outside DIR.

:func:`tracked` is what :mod:`dpsynth.api` calls around a stage. With ``tracking.mlflow`` unset it yields a tracker
that does nothing, and MLflow is never imported; with it set, MLflow is imported then (an optional extra) and every
stage of one run directory logs to the same MLflow run, whose id is kept in ``DIR/tracking.json``.

Only public or already-released things are logged: the configuration (public by the project's threat model), the
per-step mean training loss and epsilon (the loss, like ``train_log.jsonl``, is a non-DP statistic of the sampled
batch, never a record), the privacy summary of ``privacy.json``, the numbers of ``metrics.json`` and the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dpsynth.config import Config
    from dpsynth.rundir import RunDir


class Tracker:
    """The interface every stage logs through; this base class logs nothing (tracking off)."""

    def log_step(self, arm: str, row: dict[str, Any]) -> None:
        """One training step's row of ``train_log.jsonl`` (``step``, ``loss``, ``epsilon`` where computed)."""

    def log_privacy(self, arm: str, privacy: dict[str, Any]) -> None:
        """An arm's ``privacy.json``, once it is written."""

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        """The ``metrics.json`` document of the evaluate stage."""

    def log_report(self, path: Path) -> None:
        """The HTML report."""


@contextmanager
def tracked(cfg: Config, run: RunDir, stage: str, *, enabled: bool = True) -> Iterator[Tracker]:
    """The tracker of ``stage`` on ``run``; the tracked run is marked finished, or failed if the stage raised.

    ``enabled=False`` (the ranks of a distributed training other than rank 0) logs nothing.
    """
    if cfg.tracking.mlflow is None or not enabled:
        yield Tracker()
        return
    from dpsynth.tracking.mlflow_run import MlflowTracker

    tracker = MlflowTracker.open(cfg, run, stage)
    try:
        yield tracker
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close("FINISHED")


__all__ = ["Tracker", "tracked"]
