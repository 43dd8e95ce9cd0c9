"""``dpsynth audit`` on a tiny Llama: the pipeline end to end, the canaries and their coins, the scores, the bound.

One audit is trained per module (both arms, a few seconds on the tiny model); tests that need other scores copy its
directory and rerun the audit, which reuses the trained arms (same data and config) and only re-scores.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dpsynth import api
from dpsynth.cli import app
from dpsynth.config import NO_DP_KEYS, load_config
from dpsynth.data.format import IGNORE_INDEX, encode_unit
from dpsynth.data.prepare import load_code_specs
from dpsynth.data.records import Record, read_records
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.models.adapters import attach_adapter
from dpsynth.models.loader import load_model
from dpsynth.privacy import audit_run
from dpsynth.privacy.audit_canaries import (
    AuditCanary,
    check_canaries_unseen,
    inclusion_coins,
    make_audit_canaries,
    response_ids,
)
from dpsynth.privacy.audit_scoring import arm_bound, canary_losses
from dpsynth.privacy.ledger import Ledger
from dpsynth.rundir import RunDir, read_json, read_jsonl, write_json

M = 40
EPSILON = 1.5  # small enough that a planted perfect attack (eps_lb ~2.25 with 15 + 15 guesses) must flag it


def _cfg(model_dir: Path, *extra: str):
    return load_config(
        None,
        [
            f"model.name={model_dir}",
            "data.demo_records=80",
            "data.max_tokens=24",
            f"privacy.target_epsilon={EPSILON}",
            "train.batch_size=8",
            "train.physical_batch_size=8",
            "train.max_steps=3",
            "train.checkpoint_every=100",
            f"audit.num_canaries={M}",
            "audit.canary_tokens=6",
            "audit.no_dp_epochs=1",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def audited(tmp_path_factory, tiny_model_dir):
    """A prepared demo run with ``DIR/eval/metrics.json``, audited once; yields (run, audit summary, ledger path)."""
    root = tmp_path_factory.mktemp("audited")
    ledger = root / "ledger.sqlite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DPSYNTH_LEDGER", str(ledger))
        out = root / "run"
        cfg = _cfg(tiny_model_dir)
        api.prepare(cfg, out)
        write_json(RunDir(out).metrics_json, {"fidelity": {"kept": True}})
        summary = api.audit(cfg, out, progress=False)
    return RunDir(out), summary, ledger


def _copy(run: RunDir, tmp_path: Path) -> RunDir:
    shutil.copytree(run.root, tmp_path / "copy")
    return RunDir(tmp_path / "copy")


# -- the pipeline ------------------------------------------------------------------------------------------------------


def test_audit_writes_audit_json_with_both_arms(audited):
    run, summary, _ = audited
    audit = RunDir(run.audit_dir)
    on_disk = read_json(audit.root / "audit.json")
    assert on_disk == summary
    assert summary["m"] == M and summary["k_plus"] == 4 and summary["k_minus"] == 4  # default: m/10 on each side
    assert summary["significance"] == 0.05 and summary["canary_kind"] == "random_tokens"
    assert set(summary["arms"]) == {"dp", "no_dp"}
    dp_privacy = read_json(audit.privacy_json("dp"))
    for r in summary["arms"].values():
        assert r["guesses"] == 8 and 0 <= r["correct"] <= 8
        assert r["eps_lb"] >= 0 and math.isfinite(r["eps_lb"])
        assert r["training"]["reused"] is False
    assert summary["arms"]["dp"]["epsilon"] == dp_privacy["epsilon"] <= EPSILON + 1e-9
    assert summary["arms"]["no_dp"]["epsilon"] is None
    assert summary["delta"] == dp_privacy["delta"]
    # The DP arm trains as the run is configured; the no-DP arm for audit.no_dp_epochs (1 epoch > 3 steps here).
    n = dp_privacy["training_units"]
    assert summary["arms"]["dp"]["training"]["steps"] == 3
    assert summary["arms"]["no_dp"]["training"]["steps"] == math.ceil(n / 8)
    assert summary["seeds"]["audit"] == 0 and set(summary["timings"]) >= {"train_dp_s", "score_s", "total_s"}
    checks = summary["checks"]
    assert checks["dp_eps_lb_le_epsilon"] is (summary["arms"]["dp"]["eps_lb"] <= summary["arms"]["dp"]["epsilon"])
    assert isinstance(checks["no_dp_eps_lb_above_zero"], bool)


def test_audit_training_data_is_the_run_plus_the_included_canaries(audited):
    run, summary, _ = audited
    audit = RunDir(run.audit_dir)
    canaries = read_jsonl(audit.root / "canaries.jsonl")
    included = {c["unit"] for c in canaries if c["included"]}
    assert len(canaries) == M and len(included) == summary["included"] == int(inclusion_coins(M, 0).sum())
    real = read_records(run.train)
    audit_train = read_records(audit.train)
    assert audit_train[: len(real)] == real
    assert {r.unit for r in audit_train[len(real) :]} == included
    assert audit.test.read_bytes() == run.test.read_bytes()
    run_counts, audit_counts = read_json(run.prepare_json)["counts"], read_json(audit.prepare_json)["counts"]
    assert audit_counts["canaries"] == run_counts["canaries"] + len(included)
    assert audit_counts["train_units"] == run_counts["train_units"]
    assert read_json(audit.privacy_json("dp"))["training_units"] == run_counts["train_units"] + len(included)
    specs = {s.name: s.values for s in load_code_specs(run)}
    assert all(c["codes"][name] in values for c in canaries for name, values in specs.items())


def test_metrics_json_gets_the_audit_key_and_keeps_the_rest(audited):
    run, summary, _ = audited
    metrics = read_json(run.metrics_json)
    assert metrics["fidelity"] == {"kept": True}
    entry = metrics["audit"]
    assert set(entry) == {"dp", "no_dp", "m", "significance", "delta", "reference_model"}
    assert entry["reference_model"] == summary["reference_model"] == "the base model without adapter"  # no warm start
    assert entry["m"] == M and entry["delta"] == summary["delta"]
    for arm in ("dp", "no_dp"):
        assert set(entry[arm]) == {"eps_lb", "epsilon", "correct", "guesses"}
        assert entry[arm]["eps_lb"] == summary["arms"][arm]["eps_lb"]
    assert entry["dp"]["epsilon"] == summary["arms"]["dp"]["epsilon"]


def test_audit_dp_training_is_its_own_ledger_release(audited):
    run, summary, ledger_path = audited
    note = summary["ledger"]
    assert note["recorded"] is True and note["kind"] == "audit"
    releases = Ledger(ledger_path).releases()
    audit_releases = [r for r in releases if Path(r.run_dir) == run.audit_dir.resolve()]
    assert len(audit_releases) == 1
    assert audit_releases[0].arm == "dp" and audit_releases[0].status == "committed"
    assert audit_releases[0].epsilon == pytest.approx(summary["arms"]["dp"]["epsilon"])


def test_scores_are_losses_under_the_trained_arm_minus_the_base_model(audited, tiny_model_dir):
    run, _, _ = audited
    audit = RunDir(run.audit_dir)
    cfg = _cfg(tiny_model_dir)
    canaries, _ = audit_run.read_canaries_with_coins(audit)
    rows = read_jsonl(audit.root / "scores.jsonl")
    info = read_json(audit.prepare_json)
    kwargs = {"system_prompt": info["system_prompt"], "max_tokens": info["max_tokens"], "batch_size": 5}
    from dpsynth.models.loader import load_tokenizer

    tok = load_tokenizer(cfg.model)
    base = canary_losses(load_model(cfg.model), tok, canaries, **kwargs)
    trained = canary_losses(attach_adapter(load_model(cfg.model), audit.adapter("dp")), tok, canaries, **kwargs)
    np.testing.assert_allclose([r["loss_base"] for r in rows], base, rtol=1e-5)
    np.testing.assert_allclose([r["loss_dp"] for r in rows], trained, rtol=1e-5)
    np.testing.assert_allclose([r["score_dp"] for r in rows], trained - base, rtol=1e-4, atol=1e-6)
    assert not np.allclose(trained, base)  # the adapter changed the canaries' losses: scores are not all zero


def test_finished_arms_are_reused_not_retrained(audited, tmp_path, monkeypatch):
    run = _copy(audited[0], tmp_path)
    import dpsynth.train.stage as stage

    def no_training(*args, **kwargs):
        raise AssertionError("a finished audit arm was trained again")

    monkeypatch.setattr(stage, "train_arm", no_training)
    cfg = load_config(RunDir(run.root).config)
    summary = api.audit(cfg, run.root, progress=False)
    assert all(r["training"]["reused"] for r in summary["arms"].values())
    assert summary["arms"]["dp"]["eps_lb"] == audited[1]["arms"]["dp"]["eps_lb"]  # same model, same scores


def test_a_finished_arm_of_another_prompt_format_is_refused_not_reused(audited, tmp_path, monkeypatch):
    """A finished audit arm whose recorded prompt format is not today's would have its canaries scored in a format it
    never saw: the audit refuses it (before scoring, without training it again and charging the ledger twice)."""
    from dpsynth.train import prompt_format

    run = _copy(audited[0], tmp_path)
    privacy_file = RunDir(run.audit_dir).privacy_json("dp")
    info = read_json(privacy_file)
    assert info[prompt_format.KEY].startswith("sha256:")
    write_json(privacy_file, {**info, prompt_format.KEY: "sha256:another"})
    import dpsynth.train.stage as stage

    def no_training(*args, **kwargs):
        raise AssertionError("a finished audit arm was trained again")

    monkeypatch.setattr(stage, "train_arm", no_training)
    cfg = load_config(RunDir(run.root).config)
    with pytest.raises(DPSynthError, match="another prompt format"):
        api.audit(cfg, run.root, progress=False)
    assert read_json(privacy_file)[prompt_format.KEY] == "sha256:another"  # the arm is left as it was
    assert RunDir(run.audit_dir).adapter("dp").is_dir()


def test_a_stale_arm_is_refused_before_any_other_arm_trains(audited, tmp_path, monkeypatch):
    """The DP arm would train again (its stamp is gone), the no-DP arm is finished but in another prompt format: the
    audit refuses before the DP arm trains, so no second release is charged ahead of a refusal."""
    from dpsynth.train import prompt_format

    run = _copy(audited[0], tmp_path)
    audit = RunDir(run.audit_dir)
    (audit.arm("dp") / audit_run.STAMP).unlink()
    info = read_json(audit.privacy_json("no_dp"))
    write_json(audit.privacy_json("no_dp"), {**info, prompt_format.KEY: "sha256:another"})
    import dpsynth.train.stage as stage

    def no_training(*args, **kwargs):
        raise AssertionError("an arm trained before the refusal")

    monkeypatch.setattr(stage, "train_arm", no_training)
    cfg = load_config(RunDir(run.root).config)
    assert cfg.audit.arms[0] == "dp"  # the DP arm comes first: checked in the loop, it would train first
    with pytest.raises(DPSynthError, match="another prompt format"):
        api.audit(cfg, run.root, progress=False)
    assert audit.adapter("dp").is_dir()  # not removed for retraining either


class _Stop(Exception):
    pass


def test_an_interrupted_arm_resumes_and_a_changed_arm_starts_afresh(audited, tmp_path, monkeypatch):
    """Which arms train again, and how: a spy stands in for train_arm (records its call, then stops the audit)."""
    run = _copy(audited[0], tmp_path)
    audit = RunDir(run.audit_dir)
    import dpsynth.train.stage as stage

    calls: list[tuple[str, bool]] = []

    def spy(cfg, audit_run_dir, arm, *, resume=False, progress=True):
        calls.append((arm, resume))
        raise _Stop

    monkeypatch.setattr(stage, "train_arm", spy)
    cfg = load_config(audit.root.parent / "config.yaml")
    stamp = audit.arm("no_dp") / audit_run.STAMP
    write_json(stamp, {**read_json(stamp), "status": "training"})  # as if killed mid-training
    with pytest.raises(_Stop):
        api.audit(cfg, run.root, progress=False)
    assert calls == [("no_dp", True)]  # the DP arm is reused; the interrupted one resumes from its checkpoint

    calls.clear()
    changed = load_config(audit.root.parent / "config.yaml", ["audit.no_dp_epochs=2"])
    with pytest.raises(_Stop):
        api.audit(changed, run.root, progress=False)
    assert calls == [("no_dp", False)]  # another configuration: trained from scratch, nothing resumed into it
    assert not audit.adapter("no_dp").exists() and audit.adapter("dp").is_dir()

    # the non-DP arm's own batch is not a setting of the DP arm: the finished DP arm is kept (retraining it would be a
    # second release), as it is when that batch equals train.batch_size (the same as unset)
    for extra in ("train.no_dp_batch_size=4", "train.no_dp_batch_size=8", "train.no_dp_target_modules=[q_proj,o_proj]"):
        calls.clear()
        with pytest.raises(_Stop):
            api.audit(load_config(audit.root.parent / "config.yaml", [extra]), run.root, progress=False)
        assert calls == [("no_dp", False)], extra
    # ...nor is the spacing of checkpoints (its default changed from 50 to every step: old stamps must stay valid)
    for extra in ("train.checkpoint_every=1", "train.checkpoint_every=50"):
        calls.clear()
        with pytest.raises(_Stop):
            api.audit(load_config(audit.root.parent / "config.yaml", [extra]), run.root, progress=False)
        assert [arm for arm, _ in calls] == ["no_dp"], extra  # the DP arm is kept
    # a DP arm stamped before the spacing was pinned (with this config's own value, 100) is kept as well
    cfg = load_config(audit.root.parent / "config.yaml")
    assert cfg.train.checkpoint_every == 100
    dp_stamp = audit.arm("dp") / audit_run.STAMP
    dp_cfg = audit_run.arm_config(cfg, "dp", read_json(audit.privacy_json("dp"))["delta"])
    legacy = audit_run._stamp(dp_cfg, audit, "dp")
    assert audit_run._stamps(dp_cfg, audit, "dp") == (read_json(dp_stamp)["stamp"], legacy)
    assert legacy != read_json(dp_stamp)["stamp"]
    write_json(dp_stamp, {**read_json(dp_stamp), "stamp": legacy})
    calls.clear()
    with pytest.raises(_Stop):
        api.audit(cfg, run.root, progress=False)
    assert [arm for arm, _ in calls] == ["no_dp"]


def test_stamps_made_before_freeze_a_existed_still_match(audited, tmp_path):
    """train.lora.freeze_a off is the training before the key existed: a stamp is what that code hashed (the model,
    privacy and train sections without the key), so finished audit arms are kept; on, it changes the DP arm's stamp
    only (the non-DP arm trains both factors)."""
    import hashlib
    import json

    run = _copy(audited[0], tmp_path)
    audit = RunDir(run.audit_dir)
    cfg = load_config(audit.root.parent / "config.yaml")
    for arm in ("dp", "no_dp"):
        arm_cfg = audit_run.arm_config(cfg, arm, read_json(audit.privacy_json("dp"))["delta"])
        dumped = arm_cfg.model_dump(mode="json")
        dumped["train"]["lora"].pop("freeze_a")
        for key in NO_DP_KEYS:
            if arm != "no_dp" or dumped["train"].get(key) is None:
                dumped["train"].pop(key, None)
        before = hashlib.sha256(audit.train.read_bytes() + audit.prepare_json.read_bytes())
        before.update(json.dumps({k: dumped[k] for k in ("model", "privacy", "train")}, sort_keys=True).encode())
        assert audit_run._stamp(arm_cfg, audit, arm) == before.hexdigest(), arm
        frozen = arm_cfg.model_copy(deep=True)
        frozen.train.lora.freeze_a = True
        changed = audit_run._stamp(frozen, audit, arm) != audit_run._stamp(arm_cfg, audit, arm)
        assert changed == (arm == "dp"), arm


# -- planted attacks: the bound reacts to what the scores say ---------------------------------------------------------


def _planted(run: RunDir, member_loss_drop: float, noise: float, seed: int):
    """A fake ``score_arms``: trained loss = base loss - drop for members, plus noise; reads the coins from disk."""
    _, coins = audit_run.read_canaries_with_coins(RunDir(run.audit_dir))

    def fake(cfg, audit, arms, canaries, info, progress=False, reference=None):
        rng = np.random.default_rng(seed)
        base = np.full(len(canaries), 5.0)
        drop = member_loss_drop * coins + noise * rng.normal(size=len(coins))
        return {"base": base, **{a: base - drop for a in arms}}

    return fake


def test_planted_perfect_scorer_gives_a_high_bound_and_flags_the_violation(audited, tmp_path, monkeypatch):
    run = _copy(audited[0], tmp_path)
    monkeypatch.setattr(audit_run, "score_arms", _planted(run, member_loss_drop=1.0, noise=0.0, seed=0))
    result = CliRunner().invoke(app, ["audit", "--run", str(run.root), "-q", "audit.k_plus=15", "audit.k_minus=15"])
    summary = read_json(run.audit_dir / "audit.json")
    for arm in ("dp", "no_dp"):
        assert summary["arms"][arm]["correct"] == summary["arms"][arm]["guesses"] == 30
        assert summary["arms"][arm]["eps_lb"] > 2.0
    # A perfect attack on a model that claims epsilon 2 contradicts the claim: reported, and the CLI fails.
    assert summary["arms"]["dp"]["eps_lb"] > summary["arms"]["dp"]["epsilon"]
    assert summary["checks"]["dp_eps_lb_le_epsilon"] is False
    assert result.exit_code == 4, result.output
    assert "VIOLATED" in result.output


def test_planted_random_scorer_gives_about_zero(audited, tmp_path, monkeypatch):
    run = _copy(audited[0], tmp_path)
    monkeypatch.setattr(audit_run, "score_arms", _planted(run, member_loss_drop=0.0, noise=1.0, seed=3))
    cfg = load_config(RunDir(run.root).config, ["audit.k_plus=20", "audit.k_minus=20"])
    summary = api.audit(cfg, run.root, progress=False)
    for arm in ("dp", "no_dp"):
        assert summary["arms"][arm]["eps_lb"] < 0.5
    assert summary["checks"]["dp_eps_lb_le_epsilon"] is True
    result = CliRunner().invoke(app, ["audit", "--run", str(run.root), "-q"])
    assert result.exit_code == 0, result.output
    assert "eps_lb" in result.output and "dp" in result.output


def test_random_scores_rarely_give_a_positive_bound():
    """Under the null (scores independent of membership) eps_lb > 0 happens at most ~5% of the time."""
    coins = inclusion_coins(200, seed=1)
    rng = np.random.default_rng(0)
    bounds = [
        arm_bound(rng.normal(size=200), coins, k_plus=20, k_minus=20, delta=1e-5, significance=0.05)["eps_lb"]
        for _ in range(100)
    ]
    assert sum(b > 0 for b in bounds) <= 12
    assert np.mean(bounds) < 0.1


# -- canaries and coins ----------------------------------------------------------------------------------------------


def test_inclusion_is_a_seeded_fair_coin():
    a, b = inclusion_coins(1000, seed=0), inclusion_coins(1000, seed=0)
    assert (a == b).all()
    assert 430 <= a.sum() <= 570  # Binomial(1000, 1/2): 4.4 standard deviations either way
    c = inclusion_coins(1000, seed=1)
    assert (a != c).sum() > 400  # another seed: another, independent draw (about half differ)


@pytest.mark.parametrize("kind", ["random_tokens", "prefix_suffix"])
def test_canaries_are_unique_seeded_and_not_in_the_real_data(kind, tokenizer, tmp_path):
    from dpsynth.data.prepare import prepare_data

    cfg = load_config(None, ["data.demo_records=60"])
    run = RunDir(tmp_path / "run")
    prepare_data(cfg.data, run)
    specs = load_code_specs(run)
    make = lambda seed: make_audit_canaries(  # noqa: E731
        50, kind=kind, seed=seed, code_specs=specs, tokenizer=tokenizer, num_tokens=8
    )
    canaries = make(0)
    assert len({c.text for c in canaries}) == len({c.unit for c in canaries}) == 50
    assert make(0) == canaries and [c.text for c in make(1)] != [c.text for c in canaries]
    real = [*read_records(run.train), *read_records(run.test)]
    assert not any(c.text in r.text for c in canaries for r in real)
    check_canaries_unseen(canaries, real)  # does not raise
    n_tokens = [len(response_ids(tokenizer, c, 1000)) for c in canaries]
    if kind == "random_tokens":
        assert all(8 <= n <= 11 for n in n_tokens)  # the first word may split (up to 4 pieces) without its space
    else:
        assert all(n > 12 for n in n_tokens) and all(c.text[0].isupper() for c in canaries)
    with pytest.raises(DPSynthError, match="occurs in the real data"):
        check_canaries_unseen(canaries, [*real, Record(text=f"I said: {canaries[7].text}", unit="u-x")])
    with pytest.raises(DPSynthError, match="named like an audit canary"):
        check_canaries_unseen(canaries, [Record(text="fine", unit=canaries[0].unit)])


def test_scored_tokens_are_the_tokens_training_learns(tokenizer):
    """The audit scores exactly the response tokens that the training example puts in the loss (minus end of turn)."""
    canary = AuditCanary(index=0, unit="audit-canary-0", text="lamp orbit velvet", kind="random_tokens", codes={})
    for max_tokens in (2, 24):
        ex = encode_unit(tokenizer, [canary.record()], system_prompt="You write reviews.", max_tokens=max_tokens)
        learned = [t for t in ex.labels if t != IGNORE_INDEX]
        expected = response_ids(tokenizer, canary, max_tokens)
        assert learned[: len(expected)] == expected
        assert len(learned) - len(expected) == (0 if max_tokens == 2 else 1)  # the end-of-turn token when not cut
    # a canary of several sentences over the bound, under the sentence rule: cut after its last whole sentence
    long = AuditCanary(
        index=1, unit="audit-canary-1", text="Lamp orbit. Velvet hinge cobalt. Mint", kind="prefix_suffix"
    )
    bound = len(tokenizer("Lamp orbit. Velvet hinge", add_special_tokens=False)["input_ids"])
    ex = encode_unit(tokenizer, [long.record()], system_prompt="You write reviews.", max_tokens=bound, cut="sentence")
    learned = [t for t in ex.labels if t != IGNORE_INDEX]
    expected = response_ids(tokenizer, long, bound, "sentence")
    assert tokenizer.decode(expected) == "Lamp orbit."
    assert learned[:-1] == expected  # and the end of turn after it


def test_dp_arm_keeps_the_run_configuration(tiny_model_dir):
    cfg = _cfg(tiny_model_dir, "audit.no_dp_epochs=5")
    dp = audit_run.arm_config(cfg, "dp", 1e-6)
    assert dp.train.model_dump(exclude={"arms"}) == cfg.train.model_dump(exclude={"arms"})
    assert dp.model == cfg.model and dp.privacy.target_epsilon == cfg.privacy.target_epsilon
    assert dp.privacy.delta == 1e-6
    no_dp = audit_run.arm_config(cfg, "no_dp", 1e-6)
    assert no_dp.train.epochs == 5 and no_dp.train.max_steps is None
    assert no_dp.train.batch_size == cfg.train.batch_size and no_dp.train.learning_rate == cfg.train.learning_rate


def test_guess_counts_must_fit_in_the_canaries():
    with pytest.raises(ConfigError, match=r"exceed audit\.num_canaries"):
        load_config(None, ["audit.num_canaries=10", "audit.k_plus=6", "audit.k_minus=6"])


@pytest.mark.parametrize("name", ["audit_canaries", "audit_scoring", "config"])
def test_docstring_examples(name):
    import doctest
    import importlib

    module = importlib.import_module(f"dpsynth.privacy.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
