"""The ledger's storage: its SQLite schema, its rows as dataclasses, and where the file lives.

Kept apart from :mod:`dpsynth.privacy.ledger` (the transactions and the budget logic) so each stays small. Every text
column holds an id, a fingerprint, a name, a path, a timestamp or JSON of numbers (mechanism parameters, file hashes);
:func:`ident` refuses whitespace in the free-form identifiers so that record text cannot end up here by mistake.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import platformdirs

from dpsynth.errors import ConfigError
from dpsynth.privacy.accounting import AccountantName, Mechanism
from dpsynth.privacy.config import LedgerConfig
from dpsynth.privacy.files import FileRecord

ENV_VAR = "DPSYNTH_LEDGER"
Status = Literal["pending", "committed", "abandoned"]
_IDENT = re.compile(r"^[^\s]{1,256}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS budgets (
    source TEXT PRIMARY KEY,
    epsilon REAL NOT NULL CHECK (epsilon > 0),
    delta REAL NOT NULL CHECK (delta > 0 AND delta < 1),
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'committed', 'abandoned')),
    privacy_unit TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    arm TEXT NOT NULL,
    accountant TEXT NOT NULL,
    planned TEXT NOT NULL,
    planned_epsilon REAL NOT NULL,
    mechanisms TEXT,
    epsilon REAL,
    delta REAL NOT NULL,
    composed_epsilon REAL,
    composed_delta REAL,
    files TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS releases_one_pending_per_run ON releases (run_dir, arm) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS releases_by_source ON releases (source, status);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');
"""


def default_ledger_path(cfg: LedgerConfig | None = None) -> Path:
    """``$DPSYNTH_LEDGER``, else ``cfg.path``, else ``<user data dir>/dpsynth/ledger.sqlite``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    if cfg is not None and cfg.path is not None:
        return Path(cfg.path).expanduser()
    return Path(platformdirs.user_data_dir("dpsynth")) / "ledger.sqlite"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ident(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ConfigError(f"{what} must be a short identifier without whitespace (a fingerprint or a name)")
    return value


def mech_json(mechanisms: Sequence[Mechanism]) -> str:
    return json.dumps([m.to_json() for m in mechanisms], sort_keys=True, allow_nan=False)


def mech_load(text: str | None) -> tuple[Mechanism, ...]:
    return tuple(Mechanism.from_json(o) for o in json.loads(text or "[]"))


@dataclass(frozen=True)
class Budget:
    source: str
    epsilon: float
    delta: float


@dataclass(frozen=True)
class Release:
    """One ledger entry. For a pending reservation, ``mechanisms`` and ``epsilon`` are the planned ones."""

    id: int
    source: str
    status: Status
    privacy_unit: str
    run_dir: str
    arm: str
    accountant: AccountantName
    mechanisms: tuple[Mechanism, ...]
    epsilon: float
    delta: float
    composed_epsilon: float | None
    composed_delta: float | None
    files: tuple[FileRecord, ...]
    created_at: str
    finished_at: str | None

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @classmethod
    def _from_row(cls, row: sqlite3.Row) -> Release:
        committed = row["status"] == "committed"
        return cls(
            id=int(row["id"]),
            source=row["source"],
            status=row["status"],
            privacy_unit=row["privacy_unit"],
            run_dir=row["run_dir"],
            arm=row["arm"],
            accountant=row["accountant"],
            mechanisms=mech_load(row["mechanisms"] if committed else row["planned"]),
            epsilon=float(row["epsilon"] if committed else row["planned_epsilon"]),
            delta=float(row["delta"]),
            composed_epsilon=row["composed_epsilon"],
            composed_delta=row["composed_delta"],
            files=tuple(FileRecord.from_json(o) for o in json.loads(row["files"] or "[]")),
            created_at=row["created_at"],
            finished_at=row["finished_at"],
        )
