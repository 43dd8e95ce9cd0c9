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
from typing import Any, Literal

from dpsynth.config import Config
from dpsynth.data.format import cut_response, response_text
from dpsynth.data.prepare import load_prepare_info
from dpsynth.data.records import group_by_unit, read_records
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.privacy import accounting, releases
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

        tokenizer = load_tokenizer(cfg.model)
        title = bool(info.get("include_title", False))
        units = group_by_unit(read_records(run.train))
        lengths = [[_tokens(tokenizer, response_text(r, title)) for r in recs] for recs in units.values()]
        expected = int(info["counts"]["train_units"]) + int(info["counts"].get("canaries", 0))
        if len(lengths) != expected:
            raise DPSynthError(f"{run.train} holds {len(lengths)} units but prepare.json counted {expected}")
        sigma = None
        entry = None
        if mode == "dp":
            sigma = length_sigma(cfg, len(lengths))
            delta = plan_delta(cfg, len(lengths))
            entry = releases.reserve_mechanisms(  # before the draw: refused, nothing drawn, if over the budget
                cfg.ledger,
                [length_mechanism(sigma, d.max_tokens_grid)],
                delta=delta,
                accountant=cfg.privacy.accountant,
                info=info,
                run_dir=run.root,
                arm=LEDGER_ARM,
            )
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
        if mode == "dp":
            if entry is not None:  # committed before the draw is written anywhere: a crash in between over-charges
                mech = length_mechanism(rel.histogram.sigma, rel.grid)
                eps = accounting.epsilon([mech], delta, cfg.privacy.accountant)
                releases.commit_entry(entry, [mech], epsilon=eps, delta=delta, files=[])
            record.update(epsilon_fraction=cfg.privacy.length_epsilon_fraction, ledger=entry)
    info = {**info, "max_tokens": int(record["max_tokens"]), "length_release": record}
    write_json(run.prepare_json, info)
    log.info("data.max_tokens=auto: %s bound %d tokens (grid %s)", mode, info["max_tokens"], d.max_tokens_grid)
    return info


LEDGER_ARM = "length"
"""The ledger's name for the length bound's own entry."""


def length_charge(info: dict[str, Any]) -> dict[str, int]:
    """The mechanisms of the DP arm's plan that the ledger charged when the length bound was drawn: name -> entry
    (empty without a DP draw, with the ledger off, or for a run prepared before draws were charged, whose arm
    charges the length with its own entry, as then)."""
    record = info.get("length_release") or {}
    entry = record.get("ledger")
    if record.get("mode") != "dp" or not entry:
        return {}
    if entry.get("status") != "committed":
        raise DPSynthError(f"the length bound's ledger entry #{entry.get('entry')} is not committed: prepare again")
    return {LENGTH_MECHANISM: int(entry["entry"])}


def _tokens(tokenizer: Any, text: str) -> int:
    """A response's token count as training sees it before any cut."""
    return len(cut_response(tokenizer, text, 1 << 30)[0])


def arm_mode(cfg: Config) -> LengthMode:
    """The mode of a ``dpsynth run``: its DP arm's release when it trains one (its non-DP arm then uses the same
    bound), else exact (a non-DP run releases nothing)."""
    return "dp" if "dp" in cfg.train.arms else "exact"
