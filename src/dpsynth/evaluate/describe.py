"""What each metric means and which direction is better, for metrics.json and the report.

Every metric module declares its metrics in a ``DESCRIPTIONS`` mapping of :class:`MetricInfo`; :func:`describe` looks a
name up across all of them, so the report can print a definition next to each number without repeating it.

>>> describe("length_wasserstein").better
'lower'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Direction = Literal["higher", "lower", "closer to reference", "informative"]


@dataclass(frozen=True)
class MetricInfo:
    """The definition of a metric and the direction in which it is better for the synthetic data."""

    definition: str
    better: Direction

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def all_descriptions() -> dict[str, MetricInfo]:
    """Every metric's description, by name (imports the metric modules, which is cheap: no model is loaded)."""
    from dpsynth.evaluate import exposure, fidelity, mia, quality, text_privacy, utility

    out: dict[str, MetricInfo] = {}
    for module in (fidelity, utility, quality, text_privacy, mia, exposure):
        for name, info in module.DESCRIPTIONS.items():
            if name in out:  # pragma: no cover - a programming error
                raise RuntimeError(f"metric {name!r} is described twice")
            out[name] = info
    return out


def describe(name: str) -> MetricInfo:
    """The description of metric ``name``; a ``KeyError`` names the unknown metric."""
    table = all_descriptions()
    if name not in table:
        raise KeyError(f"no description for metric {name!r}")
    return table[name]
