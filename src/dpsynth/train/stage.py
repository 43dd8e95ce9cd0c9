"""The ``train`` stage: for each arm, train, release the control-code histogram, verify, write ``privacy.json``.

``privacy.json`` is the single source of truth for a release's guarantee. It is written here, by the code that ran the
mechanisms, with the epsilon the accountant computes from the mechanisms that actually ran (DP-SGD with the steps
taken, and the histogram), never from the target.
"""

from __future__ import annotations

import itertools
import shutil
from typing import Any

from dpsynth.config import Config
from dpsynth.data.format import encode_prompt, encode_unit
from dpsynth.data.prepare import load_code_specs, load_prepare_info
from dpsynth.data.records import code_key, group_by_unit, read_records
from dpsynth.privacy.accounting import epsilon as compute_epsilon
from dpsynth.privacy.mechanisms import exact_histogram, gaussian_histogram, noise_rng
from dpsynth.rundir import Arm, RunDir, write_json
from dpsynth.train.loop import ArmTrainer, TrainingSetup, planned_steps
from dpsynth.train.plan import PrivacyPlan, make_plan


def _examples_and_cells(cfg: Config, run: RunDir, tokenizer: Any) -> tuple[list[Any], list[list[tuple]], dict, list]:
    info = load_prepare_info(run)
    specs = load_code_specs(run)
    names = [s.name for s in specs]
    units = group_by_unit(read_records(run.train))
    examples = [
        encode_unit(
            tokenizer,
            recs,
            system_prompt=info["system_prompt"],
            max_tokens=int(info["max_tokens"]),
            include_title=bool(info.get("include_title", False)),
        )
        for recs in units.values()
    ]
    unit_cells = [[code_key(r.codes, names) for r in recs] for recs in units.values()]
    return examples, unit_cells, info, specs


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
        "privacy_unit": info["privacy_unit"],
        "max_records_per_user": info["max_records_per_user"],
        "training_units": plan.n,
        "clipping_mode": cfg.train.clipping_mode,
        "sampling": "poisson",
        "mechanisms": [m.to_json() for m in mechanisms],
        "epsilon_by_mechanism": {
            m.name: compute_epsilon([m], plan.delta, plan.accountant)  # type: ignore[arg-type]
            for m in mechanisms
        },
        "source": info.get("source", {}),
    }


def train_arm(cfg: Config, run: RunDir, arm: Arm, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one arm end to end and write its adapter, ``control_codes.json`` and ``privacy.json``."""
    from dpsynth.models.loader import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    examples, unit_cells, info, specs = _examples_and_cells(cfg, run, tokenizer)
    cells = list(itertools.product(*[s.values for s in specs]))
    n = len(examples)
    plan = make_plan(cfg, n=n, histogram_cells=len(cells)) if arm == "dp" else None
    setup = TrainingSetup(
        cfg=cfg, run=run, arm=arm, examples=examples, plan=plan, steps=planned_steps(cfg, n), meta={}, progress=progress
    )
    trainer = ArmTrainer(setup, resume=resume)
    if setup.meta.get("histogram") is None:  # drawn once per run; a resume reuses the stored release
        if plan is not None:
            seed = None if cfg.train.noise_seed is None else cfg.train.noise_seed + 2
            release = gaussian_histogram(unit_cells, cells, plan.histogram_sigma, noise_rng(seed))
        else:
            release = exact_histogram(unit_cells, cells)
        setup.meta["histogram"] = release.to_json()
    summary = trainer.run()
    probe = encode_prompt(tokenizer, dict(zip([s.name for s in specs], cells[0], strict=True)), info["system_prompt"])
    checks = trainer.save_and_verify(probe)
    write_json(
        run.control_codes(arm),
        {"names": [s.name for s in specs], "dp": plan is not None, "release": setup.meta["histogram"]},
    )
    if plan is not None:
        privacy = _privacy_record(plan, summary["steps"], info, cfg)
    else:
        privacy = {
            "dp": False,
            "epsilon": None,
            "note": "trained without differential privacy: a baseline for comparison, not for release",
            "privacy_unit": info["privacy_unit"],
            "training_units": n,
            "steps": summary["steps"],
        }
    privacy["checks"] = checks
    write_json(run.privacy_json(arm), privacy)
    shutil.rmtree(run.checkpoints(arm), ignore_errors=True)  # the adapter is the output; checkpoints were for resume
    return privacy
