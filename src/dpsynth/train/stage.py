"""The ``train`` stage: for each arm, train, release the control-code histogram, verify, write ``privacy.json``.

``privacy.json`` is the single source of truth for a release's guarantee. It is written here, by the code that ran the
mechanisms, with the epsilon the accountant computes from the mechanisms that actually ran (DP-SGD with the steps
taken, and the histogram), never from the target.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from dpsynth.config import Config
from dpsynth.data.format import encode_prompt, encode_unit
from dpsynth.data.prepare import load_code_specs, load_prepare_info, prepared_cut_rule
from dpsynth.data.records import group_by_unit, read_records
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.privacy import releases
from dpsynth.privacy.accounting import epsilon as compute_epsilon
from dpsynth.privacy.codes import domain_cells, release_codes
from dpsynth.privacy.mechanisms import noise_rng
from dpsynth.rundir import Arm, RunDir, aside_path, write_json
from dpsynth.train import distributed, prompt_format, warm_start
from dpsynth.train.length import length_charge, needs_length_bound
from dpsynth.train.loop import ArmTrainer, StepCallback, TrainingSetup, planned_steps
from dpsynth.train.loss_trend import warn_if_loss_flat
from dpsynth.train.plan import PrivacyPlan, make_plan

logger = logging.getLogger(__name__)


def _examples_and_cells(cfg: Config, run: RunDir, tokenizer: Any) -> tuple[list[Any], list[list[dict]], dict, list]:
    info = load_prepare_info(run)
    specs = load_code_specs(run)
    units = group_by_unit(read_records(run.train))
    examples = [
        encode_unit(
            tokenizer,
            recs,
            system_prompt=info["system_prompt"],
            max_tokens=int(info["max_tokens"]),
            include_title=bool(info.get("include_title", False)),
            cut=prepared_cut_rule(info),
        )
        for recs in units.values()
    ]
    unit_codes = [[dict(r.codes) for r in recs] for recs in units.values()]
    return examples, unit_codes, info, specs


def _privacy_record(plan: PrivacyPlan, steps_done: int, info: dict[str, Any], cfg: Config) -> dict[str, Any]:
    mechanisms = plan.mechanisms(steps_done)
    eps = compute_epsilon(mechanisms, plan.delta, plan.accountant)  # type: ignore[arg-type]
    return {
        "dp": True,
        "epsilon": eps,
        "delta": plan.delta,
        "target_epsilon": plan.target_epsilon,
        "accountant": plan.accountant,
        "noise_multiplier": plan.noise_multiplier,
        "max_grad_norm": plan.max_grad_norm,
        "sample_rate": plan.sample_rate,
        "expected_batch_size": plan.expected_batch_size,
        "steps": steps_done,
        "histogram_sigma": plan.histogram_sigma,
        # data.max_tokens=auto: the released length bound (noisy counts and all: DP output)
        "length_release": info.get("length_release"),
        "privacy_unit": info["privacy_unit"],
        "max_records_per_user": info["max_records_per_user"],
        "training_units": plan.n,
        "clipping_mode": cfg.train.clipping_mode,
        "sampling": "poisson",
        "processes": distributed.current().world_size,
        "mechanisms": [m.to_json() for m in mechanisms],
        "epsilon_by_mechanism": {
            m.name: compute_epsilon([m], plan.delta, plan.accountant)  # type: ignore[arg-type]
            for m in mechanisms
        },
        "source": info.get("source", {}),
    }


def _planned_units(info: dict[str, Any]) -> int:
    """Training units (people and canaries) as prepare counted them: known before any record is read."""
    counts = info["counts"]
    return int(counts["train_units"]) + int(counts.get("canaries", 0))


def _ledger_begin(cfg: Config, run: RunDir, plan: PrivacyPlan, info: dict[str, Any]) -> dict[str, Any] | None:
    """Reserve the DP arm's release in the ledger (refused, with what is spent and left, if over the budget), less
    the length bound's draw, which the ledger charged when it was made (:func:`dpsynth.train.length.length_charge`)."""
    charged = length_charge(cfg, info)
    return releases.reserve_release(cfg.ledger, plan, info, run.root, "dp", charged_before=charged)


def release_files(run: RunDir, arm: Arm) -> list[Path]:
    """The files a release consists of (hashed into the ledger)."""
    adapter = run.adapter(arm)
    return [*sorted(p for p in adapter.iterdir() if p.is_file()), run.control_codes(arm)]


def commit_release(cfg: Config, run: RunDir, privacy: dict[str, Any]) -> dict[str, Any]:
    """Commit the DP arm's pending ledger entry (:func:`dpsynth.privacy.releases.commit_release`); idempotent, so
    that a crash between writing privacy.json and committing is finished by ``--resume`` without training again."""
    return releases.commit_release(privacy, run.privacy_json("dp"), release_files(run, "dp"))


def train_arm(
    cfg: Config,
    run: RunDir,
    arm: Arm,
    *,
    resume: bool = False,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Train one arm end to end and write its adapter, ``control_codes.json`` and ``privacy.json``.

    ``on_step(row)`` gets each step's row of ``train_log.jsonl`` as the step ends (experiment tracking).
    """
    from dpsynth.models.loader import load_tokenizer

    info = load_prepare_info(run)
    if needs_length_bound(info):
        raise DPSynthError(
            f"{run.prepare_json} says max_tokens: auto, not yet released: prepare with `dpsynth prepare` (which "
            "releases the length bound, dpsynth.train.length) before training"
        )
    specs = load_code_specs(run)
    domains = {s.name: s.values for s in specs}
    kind = cfg.privacy.code_release
    cells = domain_cells(domains, kind)
    n = _planned_units(info)
    length = info.get("length_release")
    if arm == "dp" and length is not None and length.get("mode") == "exact":
        raise DPSynthError(f"{run.prepare_json}'s length bound was read without noise: the DP arm cannot train on it")
    plan = make_plan(cfg, n=n, histogram_cells=len(cells), length_release=length) if arm == "dp" else None
    dist = distributed.current()
    if dist.enabled and cfg.train.clipping_mode == "ghost":
        raise ConfigError("train.clipping_mode=ghost is not supported with several ranks yet (use hooks)")
    warm_start.check(cfg, run.root, (info.get("source") or {}).get("fingerprint"))  # before any reservation
    # before any record is read; by rank 0 alone, whose refusal stops every rank
    ledger_entry = dist.run_on_main(lambda: _ledger_begin(cfg, run, plan, info) if plan is not None else None)

    tokenizer = load_tokenizer(cfg.model)
    examples, unit_codes, _, _ = _examples_and_cells(cfg, run, tokenizer)
    if len(examples) != n:
        raise DPSynthError(f"{run.train} holds {len(examples)} units but prepare.json counted {n}; prepare again")
    setup = TrainingSetup(
        cfg=cfg,
        run=run,
        arm=arm,
        examples=examples,
        plan=plan,
        steps=planned_steps(cfg, n, arm),
        meta={"prompt_format": prompt_format.digest(tokenizer, run)},  # a resume refuses another
        progress=progress,
        on_step=on_step,
    )
    trainer = ArmTrainer(setup, resume=resume)
    if setup.meta.get("histogram") is None and dist.is_main:  # drawn once per run; a resume reuses the stored one
        # one record per unit is a public setting (record-level units, or a bound of one record per user)
        one = int(info["max_records_per_user"]) == 1 or info["privacy_unit"] == "record"
        if plan is not None:
            seed = None if cfg.train.noise_seed is None else cfg.train.noise_seed + 2
            release = release_codes(
                unit_codes, domains, kind, plan.histogram_sigma, noise_rng(seed), one_record_per_unit=one
            )
        else:
            release = release_codes(unit_codes, domains, kind, None, one_record_per_unit=one)
        setup.meta["histogram"] = release.to_json()
    summary = trainer.run()
    if plan is not None and dist.is_main:
        warn_if_loss_flat(summary["log"])
    if not dist.is_main:  # rank 0 saves, verifies, writes and commits the one release
        return {"rank": dist.rank, "steps": summary["steps"]}
    probe = encode_prompt(tokenizer, {s.name: s.values[0] for s in specs}, info["system_prompt"])
    checks = trainer.save_and_verify(probe)
    write_json(
        run.control_codes(arm),
        {"names": [s.name for s in specs], "dp": plan is not None, "release": setup.meta["histogram"]},
    )
    if plan is not None:
        privacy = _privacy_record(plan, summary["steps"], info, cfg)
        privacy["ledger"] = ledger_entry
    else:
        privacy = {
            "dp": False,
            "epsilon": None,
            "note": "trained without differential privacy: a baseline for comparison, not for release",
            "privacy_unit": info["privacy_unit"],
            "training_units": n,
            "steps": summary["steps"],
            "batch_size": cfg.train.arm_batch_size(arm),
            "learning_rate": cfg.train.arm_learning_rate(arm),
            "target_modules": sorted(cfg.train.arm_lora(arm).target_modules),
        }
    if cfg.train.init_adapter is not None:  # what the weights started from, for whoever reads the release
        privacy["init_adapter"] = warm_start.record(cfg, trainer.init_digest)
    if trainer.merged is not None:  # a warm start inside the base model's weights, as the arm read it when it began
        privacy["merged_warm_start"] = {**trainer.merged, "declared_public": True}
    privacy["arithmetic"] = summary["arithmetic"]  # the weights' and autocast dtypes the steps ran in
    privacy[prompt_format.KEY] = setup.meta["prompt_format"]  # generation refuses another format
    privacy["checks"] = checks
    write_json(run.privacy_json(arm), privacy)  # written before the commit: see commit_release
    if plan is not None:
        privacy = commit_release(cfg, run, privacy)
    # the adapter is the output; checkpoints were for resume
    for done in (run.checkpoints(arm), aside_path(run.checkpoints(arm))):
        shutil.rmtree(done, ignore_errors=True)
    return privacy
