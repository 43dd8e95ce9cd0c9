"""The privacy ledger: every DP release of every source, in an embedded SQLite database.

Why a ledger: each release (a trained adapter, a control-code histogram) spends privacy of the *source* data set, and
releases compose. The ledger records, per release, the mechanisms that ran (noise multiplier, sample rate, steps and
their parameters), the release's own (epsilon, delta), the accountant, the run directory and the files produced, and
refuses a release that would take the source over its budget.

What it stores: ids, hashes, parameters and paths, never record text. ``source`` is a fingerprint computed elsewhere
(a hash of the normalised source records) and ``privacy_unit`` a field name; both are refused if they contain
whitespace, so a record's text cannot slip in by mistake.

How releases compose: the *mechanism histories* of all the source's releases are composed in one Opacus accountant
(:func:`dpsynth.privacy.accounting.epsilon`), at the budget's delta. That is tighter than adding per-release epsilons,
and it makes differing per-release deltas harmless: a release's own delta only qualifies its own (epsilon, delta)
statement, while the composed figure is computed afresh from the mechanisms at one delta (the budget's; without a
budget, the smallest delta of the releases involved, the conservative choice). The accountant is the one of the
release being checked (``begin``), of the release committed (``commit``), or the one asked for (``spent``).

Crash safety: ``begin`` reserves a PENDING entry and ``commit`` turns it into a release, each in one ``BEGIN
IMMEDIATE`` transaction (the write lock is taken before the budget is read, so two concurrent runs cannot both pass the
check and overspend). A pending reservation counts against the budget but is not a release: a run that crashes leaves
only a reservation, which a resume of the same run directory and arm picks up again and ``abandon`` releases. The
database runs in WAL mode with ``synchronous=FULL``, so a committed release survives a crash or power loss.

>>> import tempfile, pathlib
>>> from dpsynth.privacy.accounting import dp_sgd_mechanism, epsilon
>>> led = Ledger(pathlib.Path(tempfile.mkdtemp()) / "ledger.sqlite")
>>> led.set_budget("sha256:ab12", epsilon=10.0, delta=1e-5)
>>> sgd = dp_sgd_mechanism(1.5, 0.04, 100, max_grad_norm=1.0)
>>> eid = led.begin("sha256:ab12", planned=[sgd], delta=1e-5, accountant="rdp", privacy_unit="user",
...                 run_dir="runs/a", arm="dp")
>>> rel = led.commit(eid, mechanisms=[sgd], epsilon=epsilon([sgd], 1e-5, "rdp"), delta=1e-5, files=[])
>>> rel.status, round(rel.epsilon, 3) == round(led.spent("sha256:ab12", 1e-5, "rdp"), 3)
('committed', True)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dpsynth.errors import BudgetExceededError, ConfigError, DPSynthError, PrivacyCheckError
from dpsynth.privacy import accounting
from dpsynth.privacy.accounting import AccountantName, Mechanism
from dpsynth.privacy.config import LedgerConfig
from dpsynth.privacy.files import fingerprint_files
from dpsynth.privacy.ledger_store import (
    ENV_VAR,
    SCHEMA,
    Budget,
    Release,
    default_ledger_path,
    ident,
    mech_json,
    mech_load,
    now,
)

__all__ = ["ENV_VAR", "Budget", "Ledger", "Release", "check_budget", "default_ledger_path"]

log = logging.getLogger(__name__)


def check_budget(epsilon: float, delta: float) -> None:
    """Refuse a budget that is no budget (epsilon not positive and finite, delta outside (0, 1))."""
    if not (epsilon > 0 and math.isfinite(epsilon)) or not (0 < delta < 1):
        raise ConfigError(f"a budget needs epsilon > 0 and 0 < delta < 1, got ({epsilon}, {delta})")


class Ledger:
    """The ledger at ``path`` (created on first use). ``default_budget`` is given to a source the first time it is seen.

    Each operation opens its own connection, so one ``Ledger`` may be shared by threads and many processes may use the
    same file at once.
    """

    def __init__(self, path: Path | str, *, default_budget: tuple[float, float | None] | None = None) -> None:
        self.path = Path(path)
        self.default_budget = default_budget
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)

    @classmethod
    def from_config(cls, cfg: LedgerConfig) -> Ledger:
        """The configured ledger (``cfg.enabled`` is the caller's switch: this always opens one)."""
        default = None if cfg.source_epsilon_budget is None else (cfg.source_epsilon_budget, cfg.source_delta_budget)
        return cls(default_ledger_path(cfg), default_budget=default)

    # -------------------- plumbing
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA synchronous=FULL")
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the write lock from the start (reads inside it see a stable ledger)."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @staticmethod
    def _budget(con: sqlite3.Connection, source: str) -> Budget | None:
        row = con.execute("SELECT epsilon, delta FROM budgets WHERE source = ?", (source,)).fetchone()
        return None if row is None else Budget(source, float(row["epsilon"]), float(row["delta"]))

    @staticmethod
    def _history(con: sqlite3.Connection, source: str, *, pending: bool, exclude: int | None = None) -> list[Mechanism]:
        """Mechanisms of the source's committed releases (and pending reservations' plans if ``pending``)."""
        rows = con.execute(
            "SELECT id, status, mechanisms, planned FROM releases WHERE source = ? AND status IN (?, ?)",
            (source, "committed", "pending" if pending else "committed"),
        ).fetchall()
        out: list[Mechanism] = []
        for r in rows:
            if r["id"] != exclude:
                out.extend(mech_load(r["mechanisms"] if r["status"] == "committed" else r["planned"]))
        return out

    @staticmethod
    def _composition_delta(con: sqlite3.Connection, source: str, budget: Budget | None, extra: float | None) -> float:
        if budget is not None:
            return budget.delta
        deltas = [
            float(r[0])
            for r in con.execute("SELECT delta FROM releases WHERE source = ? AND status != ?", (source, "abandoned"))
        ]
        if extra is not None:
            deltas.append(extra)
        return min(deltas) if deltas else 1e-5

    # -------------------- budgets
    def set_budget(self, source: str, epsilon: float, delta: float) -> None:
        """Set (or replace) the source's budget. Lowering it below what is spent is allowed; nothing more fits then."""
        ident(source, "source")
        check_budget(epsilon, delta)
        with self._write() as con:
            con.execute(
                "INSERT INTO budgets (source, epsilon, delta, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(source) DO UPDATE SET epsilon = excluded.epsilon, delta = excluded.delta, "
                "updated_at = excluded.updated_at",
                (source, float(epsilon), float(delta), now()),
            )

    def get_budget(self, source: str) -> Budget | None:
        with self._connect() as con:
            return self._budget(con, source)

    def sources(self) -> list[str]:
        """Every source with a budget or an entry, sorted."""
        with self._connect() as con:
            rows = con.execute("SELECT source FROM budgets UNION SELECT source FROM releases ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    # -------------------- releases
    def begin(
        self,
        source: str,
        *,
        planned: Sequence[Mechanism],
        delta: float,
        accountant: AccountantName,
        privacy_unit: str,
        run_dir: str | Path,
        arm: str,
    ) -> int:
        """Check the budget and reserve a PENDING entry, in one transaction; returns the entry id.

        A resume (same ``run_dir`` and ``arm`` with a pending entry) gets that entry back instead of a second
        reservation; if its plan changed, the reservation is re-checked and updated. Raises
        :class:`BudgetExceededError` (nothing written) when the plan does not fit in the budget.
        """
        ident(source, "source")
        ident(privacy_unit, "privacy unit")
        ident(arm, "arm")
        planned = list(planned)
        if not planned:
            raise ConfigError("a DP release needs at least one mechanism (the non-DP arm is not a DP release)")
        if not (0 < delta < 1):
            raise ConfigError(f"delta must be in (0, 1), got {delta}")
        run_dir = str(Path(run_dir).resolve())
        planned_eps = accounting.epsilon(planned, delta, accountant)
        with self._write() as con:
            row = con.execute(
                "SELECT * FROM releases WHERE run_dir = ? AND arm = ? AND status = 'pending'", (run_dir, arm)
            ).fetchone()
            if row is not None and row["source"] != source:
                raise ConfigError(
                    f"{run_dir} ({arm}) has a pending ledger entry #{row['id']} for another source; "
                    f"abandon it (`dpsynth budget abandon {row['id']}`) or use a new run directory"
                )
            values = (privacy_unit, accountant, mech_json(planned), planned_eps, float(delta))
            if row is not None and (row["privacy_unit"], row["accountant"], row["planned"], row["delta"]) == (
                privacy_unit,
                accountant,
                values[2],
                float(delta),
            ):
                return int(row["id"])  # a plain resume: the reservation was granted already
            budget = self._budget(con, source)
            if budget is None and self.default_budget is not None:
                eps_b, delta_b = self.default_budget
                budget = Budget(source, float(eps_b), float(delta_b if delta_b is not None else delta))
                con.execute(
                    "INSERT INTO budgets (source, epsilon, delta, updated_at) VALUES (?, ?, ?, ?)",
                    (source, budget.epsilon, budget.delta, now()),
                )
            if budget is not None:
                self._check_budget(con, budget, planned, accountant, exclude=None if row is None else row["id"])
            if row is not None:
                con.execute(
                    "UPDATE releases SET privacy_unit = ?, accountant = ?, planned = ?, planned_epsilon = ?, delta = ? "
                    "WHERE id = ?",
                    (*values, row["id"]),
                )
                return int(row["id"])
            cur = con.execute(
                "INSERT INTO releases (source, status, run_dir, arm, privacy_unit, accountant, planned, "
                "planned_epsilon, delta, created_at) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
                (source, run_dir, arm, *values, now()),
            )
            return int(cur.lastrowid or 0)

    def _check_budget(
        self,
        con: sqlite3.Connection,
        budget: Budget,
        planned: list[Mechanism],
        accountant: AccountantName,
        exclude: int | None,
    ) -> None:
        committed = self._history(con, budget.source, pending=False)
        before = self._history(con, budget.source, pending=True, exclude=exclude)
        after = accounting.epsilon([*before, *planned], budget.delta, accountant)
        if after <= budget.epsilon:
            return
        spent = accounting.epsilon(committed, budget.delta, accountant)
        reserved = accounting.epsilon(before, budget.delta, accountant)
        alone = accounting.epsilon(planned, budget.delta, accountant)
        raise BudgetExceededError(
            f"privacy budget of source {budget.source} exceeded: budget epsilon {budget.epsilon:.4g} at delta "
            f"{budget.delta:g}; committed releases spend {spent:.4g}"
            + (f" ({reserved:.4g} with pending reservations)" if reserved != spent else "")
            + f"; this release needs {alone:.4g} on its own and would bring the composed total to {after:.4g} "
            f"({accountant}); {max(budget.epsilon - reserved, 0.0):.4g} is left. Nothing was recorded."
        )

    def commit(
        self,
        entry_id: int,
        *,
        mechanisms: Sequence[Mechanism],
        epsilon: float,
        delta: float,
        files: Sequence[str | Path],
    ) -> Release:
        """Turn a pending entry into a release (idempotent: committing the same release again returns it).

        ``epsilon`` must be what :func:`accounting.epsilon` gives for ``mechanisms`` at ``delta`` with the entry's
        accountant (checked: the ledger never records a smaller epsilon than was spent). A release that happened is
        recorded even if it went over the budget (the truth is never dropped); that case is logged as a warning.
        """
        mechanisms = list(mechanisms)
        claimed = float(epsilon)
        file_records = fingerprint_files(files)
        with self._write() as con:
            row = con.execute("SELECT * FROM releases WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise DPSynthError(f"ledger entry #{entry_id} does not exist")
            if row["status"] == "committed":
                same = (
                    row["mechanisms"] == mech_json(mechanisms)
                    and math.isclose(row["epsilon"], claimed, rel_tol=1e-9)
                    and math.isclose(row["delta"], delta, rel_tol=1e-12)
                    and [f["path"] for f in json.loads(row["files"])] == [f.path for f in file_records]
                )
                if not same:
                    raise DPSynthError(f"ledger entry #{entry_id} is already committed with different contents")
                return Release._from_row(row)
            if row["status"] != "pending":
                raise DPSynthError(f"ledger entry #{entry_id} was abandoned; begin a new one")
            accountant = row["accountant"]
            actual = accounting.epsilon(mechanisms, delta, accountant)
            if not math.isclose(actual, claimed, rel_tol=1e-6, abs_tol=1e-9):
                raise PrivacyCheckError(
                    f"ledger entry #{entry_id}: claimed epsilon {claimed:.6g} but the mechanisms spend {actual:.6g} "
                    f"at delta {delta:g} ({accountant})"
                )
            source = row["source"]
            budget = self._budget(con, source)
            comp_delta = self._composition_delta(con, source, budget, float(delta))
            history = [*self._history(con, source, pending=False), *mechanisms]
            composed = accounting.epsilon(history, comp_delta, accountant)
            con.execute(
                "UPDATE releases SET status = 'committed', mechanisms = ?, epsilon = ?, delta = ?, "
                "composed_epsilon = ?, composed_delta = ?, files = ?, finished_at = ? WHERE id = ?",
                (
                    mech_json(mechanisms),
                    claimed,
                    float(delta),
                    composed,
                    comp_delta,
                    json.dumps([f.to_json() for f in file_records]),
                    now(),
                    entry_id,
                ),
            )
            if budget is not None and composed > budget.epsilon:
                log.warning(
                    "source %s is over its budget: composed epsilon %.4g > %.4g after release #%d",
                    source,
                    composed,
                    budget.epsilon,
                    entry_id,
                )
            return Release._from_row(con.execute("SELECT * FROM releases WHERE id = ?", (entry_id,)).fetchone())

    def abandon(self, entry_id: int) -> None:
        """Drop a pending reservation (its run will not release anything). A committed release cannot be abandoned."""
        with self._write() as con:
            row = con.execute("SELECT status FROM releases WHERE id = ?", (entry_id,)).fetchone()
            if row is None:
                raise DPSynthError(f"ledger entry #{entry_id} does not exist")
            if row["status"] == "committed":
                raise DPSynthError(f"ledger entry #{entry_id} is a committed release; releases are never removed")
            con.execute(
                "UPDATE releases SET status = 'abandoned', finished_at = ? WHERE id = ? AND status = 'pending'",
                (now(), entry_id),
            )

    def releases(self, source: str | None = None, include_pending: bool = False) -> list[Release]:
        """Committed releases (plus pending reservations if asked), oldest first. Abandoned entries are not listed."""
        statuses = ("committed", "pending") if include_pending else ("committed", "committed")
        query = "SELECT * FROM releases WHERE status IN (?, ?)"
        args: tuple[Any, ...] = statuses
        if source is not None:
            query += " AND source = ?"
            args = (*statuses, source)
        with self._connect() as con:
            return [Release._from_row(r) for r in con.execute(query + " ORDER BY id", args).fetchall()]

    def spent(self, source: str, delta: float, accountant: AccountantName, *, include_pending: bool = False) -> float:
        """Epsilon at ``delta`` of all the source's committed releases (and pending reservations) composed."""
        with self._connect() as con:
            return accounting.epsilon(self._history(con, source, pending=include_pending), delta, accountant)
