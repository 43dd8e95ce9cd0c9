"""How numbers and names look in the report.

One formatter for every number, so that the same quantity reads the same in the summary, a table and the appendix,
and so that a reader never sees float noise (``0.30000000000000004``) or a bare ``None``. Labels spell out what the
short arm names in metrics.json mean, because a reader of the report has not read the code.

>>> fmt(0.123456), fmt(1e-5), fmt(12345), fmt(2345.678), fmt(None), fmt(float("inf"))
('0.123', '1e-05', '12,345', '2,345.7', '—', '∞')
>>> pct(0.125), arm_label("no_dp")
('12.5%', 'non-DP baseline')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

MISSING = "—"

ARM_LABELS: Mapping[str, str] = {
    "dp": "DP synthetic",
    "pe": "DP synthetic (Private Evolution)",
    "no_dp": "non-DP baseline",
    "real": "real",
    "reference": "real-to-real reference",
    "test": "real test split",
    "real_dp": "DP logistic regression on real",
    "dp_logreg": "DP logistic regression on real",
}

MODEL_LABELS: Mapping[str, str] = {"dp": "DP model", "no_dp": "non-DP baseline model"}

#: Plot colours per arm, the same in every figure so that a reader learns them once.
ARM_COLORS: Mapping[str, str] = {
    "real": "#4d4d4d",
    "reference": "#4d4d4d",
    "test": "#4d4d4d",
    "dp": "#1f63b4",
    "pe": "#7b2d8e",
    "no_dp": "#e07b00",
    "real_dp": "#2b9a3e",
    "dp_logreg": "#2b9a3e",
}
_EXTRA_COLORS = ("#8e44ad", "#c0392b", "#16a085", "#7f8c8d")

#: Preferred order of arms in tables and legends; others follow in order of appearance.
ARM_ORDER = ("real", "reference", "test", "dp", "pe", "no_dp", "real_dp", "dp_logreg")

BETTER_LABELS: Mapping[str, str] = {"higher": "↑ higher", "lower": "↓ lower", "none": "—"}


def fmt(value: Any, digits: int = 3) -> str:
    """A number as the report shows it: ints with thousands separators, floats to ``digits`` decimals (or in
    scientific notation when tiny or huge), None as a dash. Other values are shown as text (escaped later)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value == 0:
            return "0"
        if abs(value) < 1e-3 or abs(value) >= 1e7:
            return f"{value:.{digits}g}"
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: Any, digits: int = 1) -> str:
    """A share in [0, 1] as a percentage."""
    if not is_number(value):
        return fmt(value)
    return f"{100.0 * float(value):.{digits}f}%"


def is_number(value: Any) -> TypeGuard[int | float]:
    """True for a finite or infinite int/float that is not a bool (JSON's numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def arm_label(arm: str) -> str:
    return ARM_LABELS.get(arm, arm)


def arm_short(arm: str) -> str:
    """``DP`` / ``non-DP``, for running text such as "none in the DP arm"."""
    return {"dp": "DP", "no_dp": "non-DP", "pe": "PE"}.get(arm, arm)


def model_label(arm: str) -> str:
    """The *model* of an arm (what a membership-inference attack or an audit targets), not its synthetic data."""
    return MODEL_LABELS.get(arm, arm_label(arm))


def arm_color(arm: str, position: int = 0) -> str:
    return ARM_COLORS.get(arm, _EXTRA_COLORS[position % len(_EXTRA_COLORS)])


def better_label(better: Any) -> str:
    return BETTER_LABELS.get(str(better), str(better)) if better is not None else MISSING


def order_arms(arms: list[str] | tuple[str, ...] | Any) -> list[str]:
    """``arms`` without duplicates, the known ones first in :data:`ARM_ORDER`, then the rest as given."""
    seen: list[str] = []
    for arm in arms:
        if arm not in seen:
            seen.append(arm)
    known = [a for a in ARM_ORDER if a in seen]
    return known + [a for a in seen if a not in ARM_ORDER]


def params_text(params: Any) -> str:
    """A mechanism's parameters as ``key=value`` pairs (numbers formatted)."""
    if not isinstance(params, Mapping) or not params:
        return MISSING
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items())
