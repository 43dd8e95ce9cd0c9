"""``dpsynth audit``: a one-run privacy audit of a run's training (Steinke, Nasr and Jagielski 2023).

What it does, in ``DIR/audit/`` (a run directory of its own, so the run's own outputs are never touched):

1. ``m`` canaries (:mod:`~dpsynth.privacy.audit_canaries`) and a fair, seeded coin per canary; ``data/train.jsonl``
   is the run's training split plus the canaries whose coin came up heads, each its own privacy unit;
   ``data/test.jsonl`` and ``data/prepare.json`` are the run's (counts updated). ``canaries.jsonl`` lists every
   canary with its coin.
2. Trains, with :func:`dpsynth.train.stage.train_arm`, a DP arm exactly as the run is configured (model, LoRA, privacy
   target, batch size, steps; delta pinned to the run's) and a no-DP arm. The DP arm is what is audited. The no-DP
   arm shows that the audit has power: it may train longer (``audit.no_dp_epochs``), since a lower bound of 0 on a
   model that barely saw its canaries would prove nothing.
3. Scores every canary under each arm against the reference model (the base model, or with it the public warm start
   the arms began from: :func:`dpsynth.train.warm_start.reference`) and bounds epsilon at ``audit.significance``
   (:mod:`~dpsynth.privacy.audit_scoring`), with the DP arm's delta.
4. Writes ``audit.json`` (and, when ``DIR/eval/metrics.json`` exists, its ``"audit"`` key).

Privacy. The audit's DP arm trains on the private data: it is a release, and ``train_arm`` records it in the ledger
(its own entry: run directory ``DIR/audit``, arm ``dp``) against the same source as the run. The no-DP arm and its
eps_lb are, like the run's baseline, not DP; they stay in the run directory with the rest of the owner's files.

A finished arm is reused when its training data and configuration are unchanged (training it again would spend the
privacy budget twice), so a rerun only re-scores; an arm interrupted mid-training resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from typing import Any

import numpy as np

from dpsynth.config import NO_DP_KEYS, Config
from dpsynth.data.prepare import load_code_specs, load_prepare_info
from dpsynth.data.records import read_records, write_records
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.privacy.accounting import default_delta
from dpsynth.privacy.audit_canaries import (
    AuditCanary,
    check_canaries_unseen,
    inclusion_coins,
    make_audit_canaries,
)
from dpsynth.privacy.audit_scoring import arm_bound, membership_scores, score_arms
from dpsynth.privacy.config import default_guesses
from dpsynth.rundir import Arm, RunDir, read_json, read_jsonl, write_json, write_jsonl, write_text
from dpsynth.train import prompt_format, warm_start

log = logging.getLogger(__name__)

STAMP = "audit_stamp.json"
SCORE_DEFINITION = (
    "per canary: mean NLL per response token (nats) under the trained model minus under the reference model "
    "(reference_model; its losses are scores.jsonl's loss_base), with the canary's training prompt; lower = more "
    "likely a member. IN guesses on the k_plus lowest, OUT on the k_minus highest, abstaining on the rest."
)


def audit_dir(run: RunDir) -> RunDir:
    return RunDir(run.audit_dir)


def audit_delta(cfg: Config, run: RunDir, info: dict[str, Any]) -> float:
    """The run's delta: the configured one, else the one in the run's DP privacy.json, else the default for its n."""
    if cfg.privacy.delta is not None:
        return cfg.privacy.delta
    if run.privacy_json("dp").is_file():
        return float(read_json(run.privacy_json("dp"))["delta"])
    counts = info["counts"]
    return default_delta(int(counts["train_units"]) + int(counts.get("canaries", 0)))


def arm_config(cfg: Config, arm: Arm, delta: float) -> Config:
    """The configuration an audit arm trains with: the run's, with delta pinned and (no-DP only) the audit's epochs."""
    out = cfg.model_copy(deep=True)
    out.privacy.delta = delta
    out.train.arms = [arm]
    if arm == "no_dp" and cfg.audit.no_dp_epochs is not None:
        out.train.epochs = cfg.audit.no_dp_epochs
        out.train.max_steps = None
    return out


def write_audit_data(
    run: RunDir, audit: RunDir, canaries: list[AuditCanary], coins: np.ndarray, info: dict[str, Any]
) -> dict[str, Any]:
    """Write the audit's data directory (train = run's train + included canaries) and ``canaries.jsonl``."""
    train = read_records(run.train)
    check_canaries_unseen(canaries, [*train, *read_records(run.test)])
    included = [c.record() for c, inc in zip(canaries, coins, strict=True) if inc]
    audit.data_dir.mkdir(parents=True, exist_ok=True)
    audit.prepare_json.unlink(missing_ok=True)  # written last: its presence marks complete audit data
    write_records(audit.train, [*train, *included])
    shutil.copyfile(run.test, audit.test)
    rows = ({**c.to_json(), "included": bool(i)} for c, i in zip(canaries, coins, strict=True))
    write_jsonl(audit.root / "canaries.jsonl", rows)
    audit_info = json.loads(json.dumps(info))
    counts = audit_info["counts"]
    counts["canaries"] = int(counts.get("canaries", 0)) + len(included)  # audit canaries are units beside the people
    counts["audit_canaries"] = len(included)
    audit_info["audit"] = {"canaries": len(canaries), "included": len(included)}  # no paths: the stamp hashes this
    write_json(audit.prepare_json, audit_info)
    return audit_info


def _stamps(cfg: Config, audit: RunDir, arm: Arm) -> tuple[str, str]:
    """What an arm's result depends on: its training data and the sections of its configuration that training reads.

    The non-DP arm's own settings (its batch, learning rate, modules: :data:`~dpsynth.config.NO_DP_KEYS`) count for
    that arm alone, and only when set (a stamp made before a key existed stays the same): a changed stamp retrains the
    DP arm, which is a second release. ``train.lora.freeze_a`` likewise counts for the DP arm alone, and only when on.
    A warm start counts by its digest as well as its path, so an adapter retrained in place is a new configuration.
    Checkpoint spacing cannot change an arm: the stamp (first) reads it as 50, the default when stamps began; the
    second, with the configured value, is the stamp an arm made before that got, so such an arm is kept too.
    """
    return _stamp(cfg, audit, arm, checkpoint_every=50), _stamp(cfg, audit, arm)


def _stamp(cfg: Config, audit: RunDir, arm: Arm, *, checkpoint_every: int | None = None) -> str:
    h = hashlib.sha256()
    for path in (audit.train, audit.prepare_json):
        h.update(path.read_bytes())
    dumped = cfg.model_dump(mode="json")
    for key in NO_DP_KEYS:
        if arm != "no_dp" or dumped["train"].get(key) is None:
            dumped["train"].pop(key, None)
    lora = dumped["train"]["lora"]
    if arm == "no_dp" or not lora.get("freeze_a"):
        lora.pop("freeze_a", None)  # the DP arm's setting alone; off, it is the training before the key existed
    if checkpoint_every is not None:
        dumped["train"]["checkpoint_every"] = checkpoint_every
    if dumped["train"].get("init_adapter") is not None:  # the warm start's weights, not its path (set: no old stamps)
        dumped["train"]["init_adapter_digest"] = warm_start.digest(cfg)
    sections = {k: dumped[k] for k in ("model", "privacy", "train")}
    h.update(json.dumps(sections, sort_keys=True).encode())
    return h.hexdigest()


def arm_state(cfg: Config, audit: RunDir, arm: Arm) -> tuple[str, bool, bool]:
    """(stamp, same, reusable): the arm's stamp today; whether its folder was made under this data and config; whether
    it also finished and is reused as it stands. Read once per arm and audit (a stamp hashes the training data)."""
    stamp, legacy = _stamps(cfg, audit, arm)
    stamp_path = audit.arm(arm) / STAMP
    old = read_json(stamp_path) if stamp_path.is_file() else {}
    same = old.get("stamp") in (stamp, legacy)
    finished = audit.privacy_json(arm).is_file() and (audit.adapter(arm) / "adapter_config.json").is_file()
    return stamp, same, same and old.get("status") == "done" and finished


def refuse_stale_reuse(configs: dict[Arm, Config], states: dict[Arm, tuple[str, bool, bool]], audit: RunDir) -> None:
    """Stop, before any arm trains, when a finished arm that would be reused records another prompt format: its
    canaries would be scored in a format it never saw (no setting shows such a change). Refused rather than trained
    again, since a new DP arm is charged to the ledger again; checked for every arm first, so that no other arm's
    training (and charge) comes before the refusal."""
    for arm, cfg in configs.items():
        if states[arm][2] and (why := prompt_format.stale(cfg.model, audit, arm)) is not None:
            raise DPSynthError(
                f"{why}. The audit would score this arm's canaries in today's format: remove {audit.arm(arm)} to "
                "train it again (a DP arm is charged to the ledger again)"
            )


def train_audit_arm(
    cfg: Config, audit: RunDir, arm: Arm, state: tuple[str, bool, bool], *, progress: bool
) -> dict[str, Any]:
    """Train (or reuse, or resume) one audit arm, given its :func:`arm_state`; returns its privacy.json plus how it
    was obtained."""
    from dpsynth.train.stage import commit_release, train_arm

    stamp, same, reusable = state
    stamp_path = audit.arm(arm) / STAMP
    if reusable:
        log.info("audit: the %s arm already finished on the same data and config, reusing it", arm)
        privacy: dict[str, Any] = read_json(audit.privacy_json(arm))
        if arm == "dp":
            privacy = commit_release(cfg, audit, privacy)  # finishes a commit a crash interrupted; else a no-op
        return {**privacy, "reused": True, "train_seconds": 0.0}
    if not same and audit.arm(arm).exists():
        shutil.rmtree(audit.arm(arm))  # another configuration's arm: never resumed into this one
    write_json(stamp_path, {"stamp": stamp, "status": "training"})
    start = time.perf_counter()
    privacy = train_arm(cfg, audit, arm, resume=same, progress=progress)
    seconds = time.perf_counter() - start
    write_json(stamp_path, {"stamp": stamp, "status": "done"})
    return {**privacy, "reused": False, "train_seconds": seconds}


def _arm_summary(privacy: dict[str, Any], cfg: Config) -> dict[str, Any]:
    keys = ("steps", "training_units", "noise_multiplier", "sample_rate", "epsilon", "delta", "accountant")
    out = {k: privacy[k] for k in keys if k in privacy}
    out.update(
        epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps,
        reused=privacy["reused"],
        train_seconds=round(privacy["train_seconds"], 1),
    )
    if privacy.get("dp"):
        out["epsilon_dp_sgd"] = privacy.get("epsilon_by_mechanism", {}).get("dp_sgd")
    return out


def run_audit(cfg: Config, run: RunDir, *, progress: bool = True) -> dict[str, Any]:
    """The whole audit of ``run``; returns what it writes to ``DIR/audit/audit.json``."""
    from dpsynth.models.loader import load_tokenizer

    t0 = time.perf_counter()
    a = cfg.audit
    if not a.arms:
        raise DPSynthError("audit.arms is empty: nothing to audit")
    info = load_prepare_info(run)
    audit = audit_dir(run)
    m = a.num_canaries
    k_plus = a.k_plus if a.k_plus is not None else default_guesses(m)
    k_minus = a.k_minus if a.k_minus is not None else default_guesses(m)
    delta = audit_delta(cfg, run, info)

    tokenizer = load_tokenizer(cfg.model)
    canaries = make_audit_canaries(
        m,
        kind=a.canary_kind,
        seed=a.seed,
        code_specs=load_code_specs(run),
        tokenizer=tokenizer,
        num_tokens=a.canary_tokens,
    )
    coins = inclusion_coins(m, a.seed)
    audit_info = write_audit_data(run, audit, canaries, coins, info)
    n_audit = int(audit_info["counts"]["train_units"]) + int(audit_info["counts"]["canaries"])
    if "dp" in a.arms and delta >= 1.0 / n_audit:
        raise ConfigError(
            f"the run's delta {delta:g} is not below 1/n = {1.0 / n_audit:g} for the audit's {n_audit} training units "
            "(the run's plus the included canaries); set a smaller privacy.delta or fewer audit.num_canaries"
        )
    write_text(audit.config, cfg.to_yaml())
    timings: dict[str, float] = {"data_s": time.perf_counter() - t0}

    trained: dict[str, dict[str, Any]] = {}
    configs = {arm: arm_config(cfg, arm, delta) for arm in a.arms}
    states = {arm: arm_state(configs[arm], audit, arm) for arm in a.arms}
    refuse_stale_reuse(configs, states, audit)
    for arm in a.arms:
        trained[arm] = train_audit_arm(configs[arm], audit, arm, states[arm], progress=progress)
        timings[f"train_{arm}_s"] = trained[arm]["train_seconds"]
    if "dp" in trained and abs(trained["dp"]["delta"] - delta) > 1e-12 * delta:
        raise DPSynthError(f"the audit's DP arm ran at delta {trained['dp']['delta']:g}, not the run's {delta:g}")

    t1 = time.perf_counter()
    reference, reference_model = warm_start.reference(audit, list(a.arms))
    losses = score_arms(cfg, audit, list(a.arms), canaries, audit_info, progress=progress, reference=reference)
    timings["score_s"] = time.perf_counter() - t1

    arms: dict[str, dict[str, Any]] = {}
    base = losses["base"]
    score_rows: list[dict[str, Any]] = [{"index": c.index, "loss_base": float(base[c.index])} for c in canaries]
    for arm in a.arms:
        scores = membership_scores(losses[arm], losses["base"])
        result = arm_bound(scores, coins, k_plus=k_plus, k_minus=k_minus, delta=delta, significance=a.significance)
        result["epsilon"] = trained[arm]["epsilon"] if trained[arm].get("dp") else None
        result["training"] = _arm_summary(trained[arm], configs[arm])
        arms[arm] = result
        for row, loss in zip(score_rows, losses[arm], strict=True):
            row[f"loss_{arm}"] = float(loss)
            row[f"score_{arm}"] = float(loss) - row["loss_base"]
    write_jsonl(audit.root / "scores.jsonl", score_rows)
    timings["total_s"] = time.perf_counter() - t0

    summary = _summary(cfg, run, arms, trained, m=m, k=(k_plus, k_minus), coins=coins, delta=delta, timings=timings)
    summary["reference_model"] = reference_model
    write_json(audit.root / "audit.json", summary)
    add_to_metrics(run, summary)
    return summary


def _checks(arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    dp, no_dp = arms.get("dp"), arms.get("no_dp")
    checks: dict[str, Any] = {
        "dp_eps_lb_le_epsilon": None if dp is None else bool(dp["eps_lb"] <= dp["epsilon"]),
        "no_dp_eps_lb_above_zero": None if no_dp is None else bool(no_dp["eps_lb"] > 0),
        "no_dp_eps_lb_above_dp": None if dp is None or no_dp is None else bool(no_dp["eps_lb"] > dp["eps_lb"]),
    }
    checks["note"] = (
        "eps_lb is a 95%-confidence lower bound at the stated significance: under correct DP it exceeds epsilon with "
        "probability at most the significance. A no-DP eps_lb above zero shows the attack detects membership."
    )
    return checks


def _summary(
    cfg: Config,
    run: RunDir,
    arms: dict[str, dict[str, Any]],
    trained: dict[str, dict[str, Any]],
    *,
    m: int,
    k: tuple[int, int],
    coins: np.ndarray,
    delta: float,
    timings: dict[str, float],
) -> dict[str, Any]:
    a = cfg.audit
    run_dp = read_json(run.privacy_json("dp")) if run.privacy_json("dp").is_file() else None
    return {
        "method": "one-run audit (Steinke, Nasr and Jagielski 2023), fixed k+ and k-",
        "run": str(run.root),
        "m": m,
        "included": int(coins.sum()),
        "k_plus": k[0],
        "k_minus": k[1],
        "significance": a.significance,
        "delta": delta,
        "canary_kind": a.canary_kind,
        "canary_tokens": a.canary_tokens,
        "score": SCORE_DEFINITION,
        "seeds": {
            "audit": a.seed,
            "train": cfg.train.seed,
            "noise": cfg.train.noise_seed,
            "data": cfg.data.seed,
        },
        "arms": arms,
        "run_epsilon": None if run_dp is None else run_dp.get("epsilon"),
        "no_dp_epochs": a.no_dp_epochs,
        "checks": _checks(arms),
        "ledger": _ledger_note(cfg, run, trained.get("dp")),
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "files": {"canaries": "canaries.jsonl", "scores": "scores.jsonl"},
    }


def _ledger_note(cfg: Config, run: RunDir, dp_privacy: dict[str, Any] | None) -> dict[str, Any]:
    """Where the audit's DP training is recorded as a release (said explicitly, also when it is not)."""
    if dp_privacy is None:
        return {"recorded": False, "why": "no DP arm was trained: nothing was released"}
    entry = dp_privacy.get("ledger")
    if entry:
        return {
            "recorded": True,
            "kind": "audit",
            "release": f"its own ledger entry #{entry.get('entry')}: run_dir {run.audit_dir}, arm dp",
            "entry": entry,
        }
    why = "ledger.enabled is false" if not cfg.ledger.enabled else "train_arm returned no ledger entry"
    return {"recorded": False, "why": why}


def metrics_entry(summary: dict[str, Any]) -> dict[str, Any]:
    """The ``"audit"`` key of ``metrics.json`` (the shape the report renders)."""
    out: dict[str, Any] = {"m": summary["m"], "significance": summary["significance"], "delta": summary["delta"]}
    if summary.get("reference_model"):
        out["reference_model"] = summary["reference_model"]
    for arm, r in summary["arms"].items():
        out[arm] = {"eps_lb": r["eps_lb"], "epsilon": r["epsilon"], "correct": r["correct"], "guesses": r["guesses"]}
    return out


def add_to_metrics(run: RunDir, summary: dict[str, Any]) -> bool:
    """Add the audit to ``DIR/eval/metrics.json`` when it exists (read, add, atomic write); True if it did."""
    if not run.metrics_json.is_file():
        return False
    metrics = read_json(run.metrics_json)
    metrics["audit"] = metrics_entry(summary)
    write_json(run.metrics_json, metrics)
    return True


def read_canaries_with_coins(audit: RunDir) -> tuple[list[AuditCanary], np.ndarray]:
    """The canaries and their coins as an audit wrote them (``DIR/audit/canaries.jsonl``)."""
    rows = read_jsonl(audit.root / "canaries.jsonl")
    return [AuditCanary.from_json(r) for r in rows], np.array([bool(r["included"]) for r in rows])
