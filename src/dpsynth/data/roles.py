"""Roles of control codes: which code is the label to evaluate, and which codes are ordinal.

A code is *ordinal* when its values have an order that distances and correlations may use (star ratings), *nominal*
when they do not (categories). Why the config says so instead of the code's name: a rating-like code can be called
anything (``stars``, ``score``), and a code of numbers can still be unordered (a product line id). Defaults:

* role: ``ordinal`` when every value of the public domain is a number, else ``nominal`` (``data.code_roles`` overrides);
* label: ``data.label``, else the code named ``rating``, else the only ordinal code; none when that is ambiguous.

Positions of an ordinal code are its values when they are all numbers, else 1, 2, ... in domain order, so an
ordinal code of words (``[low, medium, high]``) has distances and correlations too.

>>> specs = [CodeSpec("stars", (1, 2, 3, 4, 5)), CodeSpec("genre", ("fiction", "poetry"))]
>>> code_roles(specs, {}), resolve_label(specs, None, code_roles(specs, {}))
({'stars': 'ordinal', 'genre': 'nominal'}, 'stars')
>>> positions(CodeSpec("size", ("S", "M", "L")), "ordinal")
{'S': 1.0, 'M': 2.0, 'L': 3.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dpsynth.data.records import CodeSpec, CodeValue
from dpsynth.errors import ConfigError

ORDINAL, NOMINAL = "ordinal", "nominal"


def _numeric(values: Sequence[CodeValue]) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def code_roles(specs: Sequence[CodeSpec], configured: Mapping[str, str]) -> dict[str, str]:
    """The role of every code: ``configured`` (``data.code_roles``) where given, else the default (see module)."""
    names = [s.name for s in specs]
    unknown = sorted(set(configured) - set(names))
    if unknown:
        raise ConfigError(
            f"data.code_roles names {', '.join(unknown)}, not a control code of this data (codes: "
            f"{', '.join(names) or 'none'})"
        )
    return {s.name: configured.get(s.name) or (ORDINAL if _numeric(s.values) else NOMINAL) for s in specs}


def resolve_label(specs: Sequence[CodeSpec], configured: str | None, roles: Mapping[str, str]) -> str | None:
    """The code to evaluate as the label: ``configured`` (``data.label``, which must name a code), else ``rating``,
    else the only ordinal code, else None."""
    names = [s.name for s in specs]
    if configured is not None:
        if configured not in names:
            raise ConfigError(
                f"data.label is {configured!r}, not a control code of this data (codes: {', '.join(names) or 'none'})"
            )
        return configured
    if "rating" in names:
        return "rating"
    ordinal = [n for n in names if roles.get(n) == ORDINAL]
    return ordinal[0] if len(ordinal) == 1 else None


def positions(spec: CodeSpec, role: str) -> dict[Any, float] | None:
    """Value -> position on the code's scale for an ordinal code (None for a nominal one)."""
    if role != ORDINAL:
        return None
    if _numeric(spec.values):
        return {v: float(v) for v in spec.values}
    return {v: float(i) for i, v in enumerate(spec.values, start=1)}


def roles_from_info(info: Mapping[str, Any], specs: Sequence[CodeSpec]) -> tuple[str | None, dict[str, str]]:
    """(label, roles) as ``prepare`` recorded them in ``prepare.json``; defaults for a run prepared before roles
    existed."""
    recorded = info.get("code_roles")
    roles = (
        {s.name: str(recorded.get(s.name) or NOMINAL) for s in specs}
        if isinstance(recorded, Mapping)
        else code_roles(specs, {})
    )
    if "label" in info:
        label = info["label"]
        return (str(label) if label in roles else None), roles
    return resolve_label(specs, None, roles), roles
