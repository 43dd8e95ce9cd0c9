"""What the evaluate stage reads from a run directory, its seeded samples, and how metric entries are recorded.

Everything the metrics need is read here once: the prepared splits, the canaries, each arm's synthetic records and
``privacy.json``. Every sample is capped at ``evaluate.max_records`` with a seeded draw, so two evaluations of the same
run give the same samples and a metric's cost does not grow with the data set.

Which real records serve which purpose (and why):

* the **test split** is the real reference of every fidelity, quality and utility metric: it was never trained on, so
  comparing synthetic text with it says nothing about any training record;
* the **training split** is read where an attack or a baseline needs it: membership inference (members), distance to
  closest record and verbatim overlap (what could have been memorised, canaries included since they were trained
  on), TSTR's real baseline and the sentiment model (canaries excluded: they are planted, not data).

Nothing read here leaves the stage as text: :func:`contains_real_text` is the check that keeps real records out of
metrics.json (samples are drawn only from synthetic records that pass it, and the whole file is checked before
writing).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from dpsynth.config import Config
from dpsynth.data.canaries import Canary, read_canaries
from dpsynth.data.prepare import load_code_specs, load_prepare_info
from dpsynth.data.records import CodeSpec, Record, read_records
from dpsynth.data.roles import roles_from_info
from dpsynth.errors import DPSynthError
from dpsynth.evaluate.describe import describe
from dpsynth.rundir import DP_ARMS, SYNTHETIC_ARMS, Arm, RunDir, read_json, read_jsonl

T = TypeVar("T")
Group = str  # "privacy" | "fidelity" | "utility" | "quality"


def sample(items: Sequence[T], k: int, seed: int, label: str) -> list[T]:
    """At most ``k`` of ``items``, drawn without replacement by an RNG seeded with ``seed`` and ``label``, in their
    original order (so that a sample of a file reads like the file).

    >>> sample(list(range(10)), 3, 0, "x") == sample(list(range(10)), 3, 0, "x"), sample([1, 2], 5, 0, "x")
    (True, [1, 2])
    """
    if len(items) <= k:
        return list(items)
    keep = sorted(random.Random(f"dpsynth-eval-{seed}-{label}").sample(range(len(items)), k))
    return [items[i] for i in keep]


@dataclass
class EvalInputs:
    """The run's data as the evaluation uses it (see the module docstring for which split serves what)."""

    info: dict[str, Any]
    specs: list[CodeSpec]
    train: list[Record]  # real training records (no canaries), capped
    test: list[Record]  # real test records, capped
    train_all: list[Record]  # the whole training split as trained on (canaries included)
    test_all: list[Record]  # the whole test split
    canaries: list[Canary]
    synthetic: dict[str, list[dict[str, Any]]]  # arm -> generated rows, capped
    synthetic_all: dict[str, list[str]]  # arm -> every generated text (for the cheap text-privacy checks)
    privacy: dict[str, dict[str, Any]]  # arm -> privacy.json
    model_arms: list[Arm] = field(default_factory=list)  # arms with a trained adapter
    label: str | None = None  # the code evaluated as the label (data.label, as prepare resolved it)
    roles: dict[str, str] = field(default_factory=dict)  # code -> ordinal | nominal

    @property
    def arms(self) -> list[str]:
        return list(self.synthetic)

    @property
    def dp_privacy(self) -> dict[str, Any] | None:
        """The guarantee the run states: the privacy.json of the first DP arm present (``dp``, else ``pe``)."""
        for arm in DP_ARMS:
            p = self.privacy.get(arm)
            if p and p.get("dp"):
                return p
        return None

    @property
    def n_synthetic(self) -> dict[str, int]:
        """Records in each arm's generated file (before the cap)."""
        return {arm: len(texts) for arm, texts in self.synthetic_all.items()}

    @property
    def canary_units(self) -> set[str]:
        return {c.unit for c in self.canaries}

    def real_texts(self) -> list[str]:
        """Every real training and test text (canaries excluded): what must never appear in metrics.json."""
        canaries = self.canary_units
        return [r.text for r in self.train_all if r.unit not in canaries] + [r.text for r in self.test_all]


def load_inputs(cfg: Config, run: RunDir) -> EvalInputs:
    """Read the run directory; an error names the missing file and the command that makes it."""
    info = load_prepare_info(run)
    specs = load_code_specs(run)
    for path in (run.train, run.test):
        if not path.is_file():
            raise DPSynthError(f"{path} is missing: run `dpsynth prepare --out {run.root}` first")
    canaries = read_canaries(run.canaries) if run.canaries.is_file() else []
    canary_units = {c.unit for c in canaries}
    train_all = read_records(run.train)
    test_all = read_records(run.test)
    train_real = [r for r in train_all if r.unit not in canary_units]
    e = cfg.evaluate
    synthetic: dict[str, list[dict[str, Any]]] = {}
    synthetic_all: dict[str, list[str]] = {}
    privacy: dict[str, dict[str, Any]] = {}
    model_arms: list[Arm] = []
    for arm in SYNTHETIC_ARMS:
        if run.generated(arm).is_file():
            rows = read_jsonl(run.generated(arm))
            synthetic_all[arm] = [str(row["text"]) for row in rows]
            synthetic[arm] = sample(rows, e.max_records, e.seed, f"synthetic-{arm}")
        if run.privacy_json(arm).is_file():
            privacy[arm] = read_json(run.privacy_json(arm))
        if (run.adapter(arm) / "adapter_config.json").is_file() and arm in synthetic:
            model_arms.append(arm)  # type: ignore[arg-type]  # only fine-tuned arms have adapters
    if not synthetic:
        raise DPSynthError(f"no generated records in {run.root}: run `dpsynth generate --out {run.root}` first")
    label, roles = roles_from_info(info, specs)
    return EvalInputs(
        info=info,
        specs=specs,
        train=sample(train_real, e.max_records, e.seed, "train"),
        test=sample(test_all, e.max_records, e.seed, "test"),
        train_all=train_all,
        test_all=test_all,
        canaries=canaries,
        synthetic=synthetic,
        synthetic_all=synthetic_all,
        privacy=privacy,
        model_arms=model_arms,
        label=label,
        roles=roles,
    )


# --------------------------------------------------------------------------------------------------------------------
# Keeping real text out


def normalize_text(text: str) -> str:
    """Lower-cased, with every run of whitespace as one space: how texts are compared for containment.

    >>> normalize_text("  Great   CASE ")
    'great case'
    """
    return " ".join(text.lower().split())


def contains_real_text(text: str, real_texts: Iterable[str], *, normalized: bool = False) -> bool:
    """Whether ``text`` contains a real record's whole text (compared after :func:`normalize_text`; pass
    ``normalized=True`` when ``real_texts`` already are, to check many texts against a large split cheaply).

    Shorter overlaps (a phrase of a real review inside a synthetic one) are the verbatim n-gram check's business;
    callers that show synthetic text use both.

    >>> contains_real_text("so: Great phone case, fits well. ok", ["great phone case,  fits well."])
    True
    >>> contains_real_text("fits", ["great phone case, fits well."]), contains_real_text("", ["x"])
    (False, False)
    """
    t = normalize_text(text)
    if not t:
        return False
    return any(r and r in t for r in (real_texts if normalized else map(normalize_text, real_texts)))


def strings_in(obj: Any) -> Iterable[str]:
    """Every string value (and key) inside a JSON-like object."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield str(k)
            yield from strings_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from strings_in(v)


def assert_no_real_text(obj: Any, real_texts: Sequence[str], *, min_chars: int = 20) -> None:
    """Refuse to write ``obj`` if one of its strings contains a real record of at least ``min_chars`` characters.

    A last line of defence: a hit is a bug in this stage, and the error says where it is without quoting anything.
    """
    long_real = [normalize_text(r) for r in real_texts if len(r) >= min_chars]
    for s in strings_in(obj):
        if len(s) >= min_chars and contains_real_text(s, long_real, normalized=True):
            raise RuntimeError("metrics.json would contain the text of a real record; nothing was written (a bug)")


# --------------------------------------------------------------------------------------------------------------------
# Metric entries


def finite_or_none(value: Any) -> float | None:
    """A float, or None for None, NaN and infinities (JSON has no NaN)."""
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy values as Python values, tuples as lists and every non-finite float as None."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return finite_or_none(obj)
    return obj


_BETTER = {"higher": "higher", "lower": "lower"}  # "closer to reference" and "informative" have no direction


class MetricList:
    """The flat ``metrics`` list of metrics.json: one entry per (name, arm), with its definition and direction.

    Definitions come from the metric library (:func:`dpsynth.evaluate.describe.describe`), with a qualifier when the
    entry is one aspect of a described metric (a column, a summary statistic, an attack).
    """

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()

    def add(
        self,
        name: str,
        group: Group,
        arm: str,
        value: Any,
        key: str,
        qualifier: str | None = None,
        **extra: Any,
    ) -> None:
        if (name, arm) in self._seen:
            raise RuntimeError(f"metric {name!r} recorded twice for arm {arm!r}")  # a programming error
        self._seen.add((name, arm))
        info = describe(key)
        definition = info.definition if qualifier is None else f"{info.definition} ({qualifier})"
        entry = {
            "name": name,
            "group": group,
            "arm": arm,
            "value": finite_or_none(value),
            "better": _BETTER.get(info.better, "none"),
            "definition": definition,
        }
        entry.update(jsonable(extra))
        self.entries.append(entry)

    def value(self, name: str, arm: str) -> float | None:
        for e in self.entries:
            if e["name"] == name and e["arm"] == arm:
                return e["value"]
        raise KeyError((name, arm))
