"""The ``tracking`` section: where (if anywhere) a run is recorded outside its run directory.

Light on purpose (pydantic only): :mod:`dpsynth.config` imports it, and the CLI's ``--help`` must not import MLflow.
"""

from __future__ import annotations

from pydantic import Field

from dpsynth._base import Section


class TrackingConfig(Section):
    """Experiment tracking with MLflow (the ``tracking`` extra: ``pip install 'dpsynth[tracking]'``).

    What is logged: the resolved configuration (as params), each arm's per-step training loss and epsilon, the DP
    arm's privacy summary, every number of ``metrics.json`` and the HTML report. Never a record of the data set.
    """

    mlflow: str | None = Field(
        None,
        description="MLflow tracking URI (e.g. sqlite:///mlflow.db, http://host:5000); none: no tracking",
    )
    experiment: str = Field("dpsynth", min_length=1, description="MLflow experiment name (created if missing)")
    run_name: str | None = Field(None, description="MLflow run name (default: the run directory's name)")
    artifact_location: str | None = Field(
        None,
        description="artifact root of a newly created experiment (default for sqlite:///PATH: PATH's folder/"
        "mlartifacts; otherwise the tracking server's default)",
    )
    log_report: bool = Field(
        True,
        description="log report.html as an artifact; it shows synthetic samples of every arm, including the non-DP "
        "baseline's (not DP: see README, 'What is private')",
    )
