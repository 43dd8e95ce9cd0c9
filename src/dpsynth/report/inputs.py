"""Reading what the report is built from: DIR/eval/metrics.json and DIR/dp/privacy.json.

Why both: metrics.json carries every measurement, but ``privacy.json`` is the single source of truth for a release's
guarantee (written by the code that ran the mechanisms, with the ledger entry it committed). The report states the
guarantee from privacy.json and only falls back to metrics.json's copy (``run.dp``) when privacy.json is absent; if
the two disagree the report says so in a warning instead of silently picking one.

Any part of metrics.json may be absent or null in a partial run; accessors return empty mappings then, so sections
render "not measured" notes. A missing or unreadable metrics.json is a user error (evaluate has not run).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dpsynth.errors import DPSynthError
from dpsynth.report.fmt import is_number
from dpsynth.report.model import MetricIndex
from dpsynth.rundir import DP_ARMS, RunDir

SCHEMA_VERSION = 1


def as_map(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (null and malformed parts read as absent)."""
    return value if isinstance(value, Mapping) else {}


@dataclass
class Inputs:
    """The parsed inputs and the warnings found while reading them."""

    doc: Mapping[str, Any]
    privacy: Mapping[str, Any] | None
    index: MetricIndex
    warnings: list[str] = field(default_factory=list)

    @property
    def run(self) -> Mapping[str, Any]:
        return as_map(self.doc.get("run"))

    @property
    def tables(self) -> Mapping[str, Any]:
        return as_map(self.doc.get("tables"))

    @property
    def distributions(self) -> Mapping[str, Any]:
        return as_map(self.doc.get("distributions"))

    @property
    def guarantee(self) -> Mapping[str, Any] | None:
        """The DP arm's guarantee: privacy.json when present (and DP), else metrics.json's ``run.dp``."""
        if self.privacy is not None:
            return self.privacy if self.privacy.get("dp", True) is not False else None
        dp = self.run.get("dp")
        return dp if isinstance(dp, Mapping) else None

    @property
    def guarantee_source(self) -> str:
        if self.privacy is None:
            return "eval/metrics.json (run.dp)"
        return "pe/privacy.json" if self.privacy.get("generator") == "pe" else "dp/privacy.json"

    @property
    def arms(self) -> set[str]:
        """The arms this run has data for: synthetic counts, metric arms, samples."""
        found = set(as_map(self.run.get("n_synthetic")))
        found |= {m.arm for m in self.index.metrics}
        found |= set(as_map(self.doc.get("samples")))
        return found

    @property
    def ledger(self) -> Mapping[str, Any] | None:
        g = self.guarantee
        entry = g.get("ledger") if g is not None else None
        return entry if isinstance(entry, Mapping) else None


def _read_json(path: Any, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DPSynthError(f"{path}:{exc.lineno}: {what} is not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise DPSynthError(f"{path}: {what} is not UTF-8 text") from None


def load_inputs(run: RunDir) -> Inputs:
    """Read metrics.json (required) and the DP arm's privacy.json (optional)."""
    path = run.metrics_json
    if not path.is_file():
        raise DPSynthError(f"{path} is missing: run `dpsynth evaluate --out {run.root}` first")
    doc = _read_json(path, "metrics.json")
    if not isinstance(doc, Mapping):
        raise DPSynthError(f"{path}: expected a JSON object at the top level, found {type(doc).__name__}")
    warnings: list[str] = []
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        warnings.append(
            f"metrics.json has schema_version {version!r}; this report understands version {SCHEMA_VERSION}, "
            "so some parts may be missing"
        )
    privacy: Mapping[str, Any] | None = None
    ppath = next((run.privacy_json(a) for a in DP_ARMS if run.privacy_json(a).is_file()), run.privacy_json("dp"))
    if ppath.is_file():
        try:
            loaded = _read_json(ppath, "privacy.json")
        except DPSynthError as exc:
            warnings.append(f"{exc}; the guarantee below is taken from metrics.json instead")
        else:
            if isinstance(loaded, Mapping):
                privacy = loaded
            else:
                warnings.append(f"{ppath} is not a JSON object; the guarantee below is taken from metrics.json")
    index = MetricIndex(doc.get("metrics"))
    if index.skipped:
        warnings.append(f"{index.skipped} malformed metric entries in metrics.json were skipped")
    inputs = Inputs(doc=doc, privacy=privacy, index=index, warnings=warnings)
    _check_consistency(inputs)
    return inputs


def _check_consistency(inputs: Inputs) -> None:
    """Warn when metrics.json's copy of the guarantee differs from privacy.json (a stale evaluation)."""
    copy = inputs.run.get("dp")
    if inputs.privacy is None or not isinstance(copy, Mapping):
        return
    for key in ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps"):
        a, b = inputs.privacy.get(key), copy.get(key)
        if is_number(a) and is_number(b) and not math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0):
            inputs.warnings.append(
                f"{key} is {a} in dp/privacy.json but {b} in eval/metrics.json: the evaluation may be stale "
                "(the report states the guarantee from privacy.json)"
            )
