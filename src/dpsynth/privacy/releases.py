"""A DP arm's release in the ledger, from reservation to commit: the same two steps for every generator.

Why one module: DP fine-tuning (:mod:`dpsynth.train.stage`) and Private Evolution (:mod:`dpsynth.pe.run`) release
different files under different mechanisms, but the discipline is one. The release is reserved as PENDING before any
record is read (:func:`reserve_release`), the arm writes its ``privacy.json`` with the ``ledger`` field that the
reservation returned, and only then is it committed (:func:`commit_release`), which records the result in
``privacy.json`` again. A crash between the two leaves a ``privacy.json`` whose entry is still pending; ``--resume``
commits it without running the arm again or spending twice.

A release made before the arm trains (the length bound of ``data.max_tokens=auto``, drawn when the data is prepared
and printed at once) is charged when it is drawn, as its own entry (:func:`reserve_mechanisms` and
:func:`commit_entry`): a draw that was looked at is spent, whether or not an arm ever trains on it. The arm's plan
still calibrates its noise to the whole (its privacy.json lists every mechanism and states the whole epsilon), and its
own entry leaves out what was charged before (``charged_before``), so the ledger composes each mechanism once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from dpsynth.privacy import accounting
from dpsynth.privacy.accounting import Mechanism
from dpsynth.privacy.config import LedgerConfig
from dpsynth.privacy.ledger import Ledger
from dpsynth.rundir import write_json


class PlannedRelease(Protocol):
    """What a generator's privacy plan gives the ledger: its mechanisms, delta and accountant (DP-SGD, PE)."""

    @property
    def delta(self) -> float: ...

    @property
    def accountant(self) -> Any: ...

    def mechanisms(self) -> list[Mechanism]: ...


def reserve_release(
    cfg: LedgerConfig,
    plan: PlannedRelease,
    info: dict[str, Any],
    run_dir: str | Path,
    arm: str,
    *,
    charged_before: Mapping[str, int] | None = None,
) -> dict[str, Any] | None:
    """Reserve an arm's release as PENDING before any record is read (refused, with what is spent and left, if it
    would exceed the budget); None when the ledger is off. The ``ledger`` field of the arm's privacy.json.

    ``charged_before``: mechanism name -> ledger entry, for those of the plan the ledger holds already (left out of
    this entry; recorded in the returned field, so that the commit leaves them out too)."""
    skip = dict(charged_before or {})
    entry = reserve_mechanisms(
        cfg,
        [m for m in plan.mechanisms() if m.name not in skip],
        delta=plan.delta,
        accountant=plan.accountant,
        info=info,
        run_dir=run_dir,
        arm=arm,
    )
    if entry is not None and skip:
        entry["charged_before"] = skip
    return entry


def reserve_mechanisms(
    cfg: LedgerConfig,
    mechanisms: Sequence[Mechanism],
    *,
    delta: float,
    accountant: Any,
    info: dict[str, Any],
    run_dir: str | Path,
    arm: str,
) -> dict[str, Any] | None:
    """Reserve a release of ``mechanisms`` of the prepared source ``info`` describes as PENDING (refused if over the
    budget); None when the ledger is off. Returns the entry's record, for :func:`commit_entry`."""
    if not cfg.enabled:
        return None
    ledger = Ledger.from_config(cfg)
    source = info["source"]["fingerprint"]
    entry = ledger.begin(
        source,
        planned=list(mechanisms),
        delta=delta,
        accountant=accountant,
        privacy_unit=info["privacy_unit"],
        run_dir=run_dir,
        arm=arm,
    )
    return {"path": str(ledger.path), "entry": entry, "source": source, "status": "pending"}


def commit_release(privacy: dict[str, Any], privacy_path: Path, files: Sequence[Path]) -> dict[str, Any]:
    """Commit the pending entry named in an arm's ``privacy`` (its privacy.json at ``privacy_path``), hashing
    ``files`` into the ledger, and write the result back to privacy.json; returns the updated document.

    Idempotent (an entry already committed, or no ledger, is returned unchanged), so that ``--resume`` can finish a
    commit that a crash interrupted.
    """
    entry = privacy.get("ledger")
    if not entry or entry.get("status") == "committed":
        return privacy
    skip = set(entry.get("charged_before") or {})
    mechanisms = [Mechanism.from_json(m) for m in privacy["mechanisms"] if m["name"] not in skip]
    eps = privacy["epsilon"]
    if skip:  # the entry's own epsilon: of its own mechanisms (privacy.json states the whole)
        eps = accounting.epsilon(mechanisms, privacy["delta"], privacy["accountant"])
    commit_entry(entry, mechanisms, epsilon=eps, delta=privacy["delta"], files=files)
    write_json(privacy_path, privacy)
    return privacy


def commit_entry(
    entry: dict[str, Any], mechanisms: Sequence[Mechanism], *, epsilon: float, delta: float, files: Sequence[Path]
) -> dict[str, Any]:
    """Commit the pending ledger entry ``entry`` records (:func:`reserve_mechanisms`) and update the record in place
    (status, the source's composed epsilon, its budget); idempotent. Returns ``entry``."""
    ledger = Ledger(entry["path"])
    release = ledger.commit(int(entry["entry"]), mechanisms=mechanisms, epsilon=epsilon, delta=delta, files=files)
    entry.update(
        status="committed",
        composed_epsilon=release.composed_epsilon,
        composed_delta=release.composed_delta,
        releases_of_source=len(ledger.releases(release.source)),
    )
    budget = ledger.get_budget(release.source)
    entry["budget"] = None if budget is None else {"epsilon": budget.epsilon, "delta": budget.delta}
    return entry
