"""A frontier's rows as values: each row's key, privacy level and real-record count (no I/O, no configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from dpsynth.frontier.config import Level


@dataclass(frozen=True)
class RowSpec:
    """One row: its key, its privacy level (a number, ``"inf"`` or ``"real"``) and how many real records it uses."""

    key: str
    eps: float | str
    real_n: int | None = None  # real rows: how many records (None: all)


def row_specs(levels: list[Level], *, real_all: bool) -> list[RowSpec]:
    """The rows for ``levels``, then the real rows.

    >>> [r.key for r in row_specs([0.0, 1.0, 4.0, "inf"], real_all=True)]
    ['eps0', 'eps1', 'eps4', 'epsinf', 'real', 'real_all']
    """
    rows = [RowSpec(level_key(level), level) for level in levels]
    rows.append(RowSpec("real", "real", real_n=-1))
    if real_all:
        rows.append(RowSpec("real_all", "real"))
    return rows


def level_key(level: Level) -> str:
    """``eps0``, ``eps0.5``, ``eps4``, ``epsinf``: a directory name per level.

    >>> level_key(4.0), level_key(0.5), level_key("inf")
    ('eps4', 'eps0.5', 'epsinf')
    """
    if level == "inf":
        return "epsinf"
    return f"eps{float(level):g}"
