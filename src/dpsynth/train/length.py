"""Resolve ``data.max_tokens=auto`` in a run's prepared data, once, before anything is trained on it.

The release itself is :mod:`dpsynth.privacy.length`; this module reads what it needs (each training response's token
count, exactly as training tokenizes it) and writes the bound into ``prepare.json`` (``max_tokens``, an integer, which
every later reader uses as before, and ``length_release``: how it was chosen). The DP arm's plan
(:func:`dpsynth.train.plan.make_plan`) then composes the release's mechanism with DP-SGD and the code histogram: the
arm's noise is calibrated to the whole target. The ledger charges the draw when it is made (an entry of its own, arm
``length``; :mod:`dpsynth.privacy.releases`): the bound is printed and saved at once, so a draw is spent even if no arm
ever trains on it, and preparing again is charged again. The arm's own entry then leaves the length mechanism out
(:func:`length_charge`). Three modes:

* ``dp``: the noisy histogram at the DP arm's noise (:func:`dpsynth.train.plan.length_sigma`);
* ``exact``: the histogram without noise, for an arm that is never released (a frontier's eps = inf row);
* ``public``: no private data read at all, ``data.max_tokens_public`` (a frontier's eps = 0 and real rows).

A prepared run that holds a bound already keeps it: a later stage or a resume never draws the noise again. Preparing
again (new data, a new draw) is a second release, charged as such; the DP plan records the released counts, so a
checkpoint trained on the first draw refuses to resume on the second (:class:`dpsynth.train.plan.PrivacyPlan`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from dpsynth.config import Config
from dpsynth.data.format import cut_response, response_text
from dpsynth.data.prepare import load_prepare_info
from dpsynth.data.records import group_by_unit, read_records
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.privacy import accounting, releases
from dpsynth.privacy.accounting import Mechanism
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.length import LENGTH_MECHANISM, length_mechanism, release_length
from dpsynth.privacy.mechanisms import noise_rng
from dpsynth.rundir import RunDir, write_json
from dpsynth.train.plan import length_sigma, plan_delta

log = logging.getLogger(__name__)
LengthMode = Literal["dp", "exact", "public"]
AUTO = "auto"


def needs_length_bound(info: dict[str, Any]) -> bool:
    """True while ``prepare.json`` still says ``max_tokens: auto`` (prepared, bound not yet released)."""
    return info.get("max_tokens") == AUTO


def resolve_length_bound(cfg: Config, run: RunDir, mode: LengthMode) -> dict[str, Any]:
    """Write the length bound into ``run``'s ``prepare.json`` if it still says ``auto``; returns prepare.json."""
    info = load_prepare_info(run)
    if not needs_length_bound(info):
        return info
    if cfg.generator == "pe":
        raise ConfigError("data.max_tokens=auto is released with the fine-tuned DP arm; generator=pe needs a number")
    d = cfg.data
    record: dict[str, Any]
    if mode == "public":
        record = {"mode": mode, "max_tokens": d.max_tokens_public}
    else:
        from dpsynth.models.loader import load_tokenizer

        expected = int(info["counts"]["train_units"]) + int(info["counts"].get("canaries", 0))
        sigma = None
        charge: tuple[dict[str, Any] | None, Mechanism, float] | None = None
        if mode == "dp":  # reserved from prepare.json's counts, before a record is read: refused if over the budget
            sigma = length_sigma(cfg, expected)
            mech, delta = length_mechanism(sigma, d.max_tokens_grid), plan_delta(cfg, expected)
            entry = releases.reserve_mechanisms(
                cfg.ledger,
                [mech],
                delta=delta,
                accountant=cfg.privacy.accountant,
                info=info,
                run_dir=run.root,
                arm=LEDGER_ARM,
            )
            charge = (entry, mech, delta)
        tokenizer = load_tokenizer(cfg.model)
        title = bool(info.get("include_title", False))
        units = group_by_unit(read_records(run.train))
        lengths = [[_tokens(tokenizer, response_text(r, title)) for r in recs] for recs in units.values()]
        if len(lengths) != expected:
            raise DPSynthError(f"{run.train} holds {len(lengths)} units but prepare.json counted {expected}")
        seed = None if cfg.train.noise_seed is None else cfg.train.noise_seed + 3
        rel = release_length(
            lengths,
            grid=d.max_tokens_grid,
            quantile=d.max_tokens_quantile,
            sigma=sigma,
            rng=noise_rng(seed),
            fallback=d.max_tokens_public,
        )
        record = {"mode": mode, **rel.to_json()}
        if charge is not None:
            entry, mech, delta = charge
            if entry is not None:  # committed before the draw is written anywhere: a crash in between over-charges
                eps = accounting.epsilon([mech], delta, cfg.privacy.accountant)
                releases.commit_entry(entry, [mech], epsilon=eps, delta=delta, files=[])
                entry = {k: entry[k] for k in ("path", "entry", "source", "status")}
            record.update(epsilon_fraction=cfg.privacy.length_epsilon_fraction, ledger=entry)
    info = {**info, "max_tokens": int(record["max_tokens"]), "length_release": record}
    write_json(run.prepare_json, info)
    log.info("data.max_tokens=auto: %s bound %d tokens (grid %s)", mode, info["max_tokens"], d.max_tokens_grid)
    return info


LEDGER_ARM = "length"
"""The ledger's name for the length bound's own entry."""


def length_charge(cfg: Config, info: dict[str, Any]) -> dict[str, int]:
    """The mechanisms of the DP arm's plan that its ledger charged when the length bound was drawn: name -> entry.

    Empty (the arm then charges the length with its own entry, the safe direction) without a DP draw, with the ledger
    off, for a run prepared before draws were charged, and whenever the arm's ledger does not hold that very charge:
    another ledger file (another ``DPSYNTH_LEDGER``, a copied run directory), another source, another mechanism.
    """
    record = info.get("length_release") or {}
    entry = record.get("ledger")
    if record.get("mode") != "dp" or not entry or not cfg.ledger.enabled:
        return {}
    ledger = Ledger.from_config(cfg.ledger)
    if Path(entry["path"]).resolve() != ledger.path.resolve():
        log.warning(
            "the length bound was charged to %s, not this run's ledger %s: charged again here with the DP arm",
            entry["path"],
            ledger.path,
        )
        return {}
    source = (info.get("source") or {}).get("fingerprint")
    mech = length_mechanism(float(record["sigma"]), record["grid"])
    held = [r for r in ledger.releases(source) if r.id == int(entry["entry"])]
    if not held or held[0].arm != LEDGER_ARM or list(held[0].mechanisms) != [mech]:
        log.warning(
            "ledger %s holds no length charge #%s for this run: charged again with the DP arm",
            ledger.path,
            entry["entry"],
        )
        return {}
    return {LENGTH_MECHANISM: int(entry["entry"])}


def _tokens(tokenizer: Any, text: str) -> int:
    """A response's token count as training sees it before any cut."""
    return len(cut_response(tokenizer, text, 1 << 30)[0])


def arm_mode(cfg: Config) -> LengthMode:
    """The mode of a ``dpsynth run``: its DP arm's release when it trains one (its non-DP arm then uses the same
    bound), else exact (a non-DP run releases nothing)."""
    return "dp" if "dp" in cfg.train.arms else "exact"
