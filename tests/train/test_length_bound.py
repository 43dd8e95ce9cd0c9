"""data.max_tokens=auto through the stages: released at prepare, composed in the DP arm's plan, charged in the
ledger, followed by training and generation, never drawn twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dpsynth import api
from dpsynth.config import load_config
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.privacy.ledger import Ledger
from dpsynth.rundir import RunDir, read_json, read_jsonl
from dpsynth.train.length import resolve_length_bound
from dpsynth.train.plan import PrivacyPlan, make_plan

GRID = "data.max_tokens_grid=[8,16,48]"


def _cfg(model_dir: Path, *extra: str):
    return load_config(
        None,
        [
            f"model.name={model_dir}",
            "data.demo_records=80",
            "data.max_tokens=auto",
            GRID,
            "train.batch_size=8",
            "train.physical_batch_size=4",
            "train.max_steps=3",
            "train.arms=[dp]",
            "generate.arms=[dp]",
            "generate.num_records=6",
            "generate.max_new_tokens=1",
            "generate.batch_size=6",
            *extra,
        ],
    )


def test_the_bound_is_released_charged_and_followed(tmp_path, tiny_model_dir, tokenizer):
    cfg = _cfg(tiny_model_dir, "train.noise_seed=0")  # one fixed draw: the bound asserted below is not left to chance
    api.prepare(cfg, tmp_path)
    run = RunDir(tmp_path)
    info = read_json(run.prepare_json)
    rel = info["length_release"]
    assert rel["mode"] == "dp" and rel["sigma"] > 0 and rel["grid"] == [8, 16, 48]
    assert info["max_tokens"] == rel["max_tokens"] in (8, 16, 48)  # an integer every later reader uses as before
    # the demo's reviews run past 16 tokens: a median near the truth, the noise at 5% of eps 8 being small here
    assert rel["max_tokens"] == 48

    api.train(cfg, tmp_path, progress=False)
    privacy = read_json(run.privacy_json("dp"))
    assert {m["name"] for m in privacy["mechanisms"]} == {"dp_sgd", "gaussian_histogram", "length_histogram"}
    assert privacy["epsilon"] <= 8.0 and privacy["epsilon"] == pytest.approx(8.0, rel=0.02)  # all three in the target
    assert privacy["length_release"]["noisy_counts"] == rel["noisy_counts"]
    # the draw was charged when made, as its own entry; the arm's entry leaves it out: the source's composed epsilon
    # is the arm's whole epsilon, every mechanism counted once
    source = info["source"]["fingerprint"]
    ledger = Ledger(Path(os.environ["DPSYNTH_LEDGER"]))
    length_entry, arm_entry = ledger.releases(source)
    assert (length_entry.arm, arm_entry.arm) == ("length", "dp")
    assert [m.name for m in length_entry.mechanisms] == ["length_histogram"]
    assert {m.name for m in arm_entry.mechanisms} == {"dp_sgd", "gaussian_histogram"}
    assert rel["ledger"] == {**rel["ledger"], "entry": length_entry.id, "status": "committed"}
    assert privacy["ledger"]["charged_before"] == {"length_histogram": length_entry.id}
    assert arm_entry.epsilon < privacy["epsilon"]
    spent = ledger.spent(source, privacy["delta"], privacy["accountant"])
    assert spent == pytest.approx(privacy["epsilon"], rel=1e-6)  # the ledger's own tolerance (Ledger.commit)
    assert privacy["ledger"]["composed_epsilon"] == pytest.approx(privacy["epsilon"], rel=1e-6)

    # generation writes up to the released bound, not generate.max_new_tokens=1
    api.generate(cfg, tmp_path, progress=False)
    texts = [r["text"] for r in read_jsonl(run.generated("dp"))]
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert longest > 4


def test_the_length_release_costs_the_other_mechanisms_some_noise(tmp_path, tiny_model_dir):
    cfg = _cfg(tiny_model_dir)
    length = {"mode": "dp", "sigma": 40.0, "grid": [8, 16, 48]}
    without = make_plan(cfg, n=500, histogram_cells=10)
    with_length = make_plan(cfg, n=500, histogram_cells=10, length_release=length)
    assert with_length.noise_multiplier > without.noise_multiplier  # the same target now covers one more release
    assert with_length.epsilon() <= 8.0 and with_length.epsilon() == pytest.approx(8.0, rel=0.02)
    assert PrivacyPlan.from_json(with_length.to_json()) == with_length
    other_draw = make_plan(cfg, n=500, histogram_cells=10, length_release={**length, "noisy_counts": [1.0, 2.0]})
    assert other_draw.to_json() != with_length.to_json()  # another draw of the bound: another plan, no resume
    # a plan without the release keeps the JSON of plans written before it existed: their checkpoints still resume
    assert "length_sigma" not in without.to_json() and PrivacyPlan.from_json(without.to_json()) == without
    exact = make_plan(cfg, n=500, histogram_cells=10, length_release={"mode": "exact", "sigma": 0.0, "grid": [8]})
    assert exact == without


def test_a_resume_never_draws_the_noise_twice(tmp_path, tiny_model_dir):
    cfg = _cfg(tiny_model_dir)
    api.prepare(cfg, tmp_path)
    run = RunDir(tmp_path)
    first = read_json(run.prepare_json)
    again = resolve_length_bound(cfg, run, "dp")
    assert again == first == read_json(run.prepare_json)


def test_a_resume_on_data_prepared_again_is_refused(tmp_path, tiny_model_dir, monkeypatch):
    """Preparing again draws the bound again (a second release): a checkpoint trained on the first draw must not
    continue on the second, which the plan's record of the released counts refuses."""
    from dpsynth.train import loop as loop_module

    cfg = _cfg(tiny_model_dir, "train.checkpoint_every=1")
    api.prepare(cfg, tmp_path)
    original = loop_module.ArmTrainer._after_step

    def crash(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise RuntimeError("crash after one step")

    with monkeypatch.context() as m:
        m.setattr(loop_module.ArmTrainer, "_after_step", crash)
        with pytest.raises(RuntimeError, match="crash after one step"):
            api.train(cfg, tmp_path, progress=False)
    first = read_json(RunDir(tmp_path).prepare_json)["length_release"]
    from dpsynth.data.prepare import prepare_data

    prepare_data(cfg.data, RunDir(tmp_path))  # the data stage again, over the same directory
    resolve_length_bound(cfg, RunDir(tmp_path), "dp")
    assert read_json(RunDir(tmp_path).prepare_json)["length_release"]["noisy_counts"] != first["noisy_counts"]
    from dpsynth.train.stage import train_arm

    with pytest.raises(DPSynthError, match="different plan"):
        train_arm(cfg, RunDir(tmp_path), "dp", resume=True, progress=False)


def test_every_draw_is_charged_even_if_no_arm_trains(tmp_path, tiny_model_dir):
    """`dpsynth prepare` prints the bound: a draw looked at is spent. Preparing again draws again and is charged again;
    the arm that then trains is charged for its own mechanisms only."""
    from dpsynth.data.prepare import prepare_data

    cfg = _cfg(tiny_model_dir)
    run = RunDir(tmp_path)
    api.prepare(cfg, tmp_path)
    source = read_json(run.prepare_json)["source"]["fingerprint"]
    ledger = Ledger(Path(os.environ["DPSYNTH_LEDGER"]))
    (first,) = ledger.releases(source)
    assert first.arm == "length" and first.status == "committed"

    prepare_data(cfg.data, run)  # the data stage again over the same directory: a new draw, a new charge
    resolve_length_bound(cfg, run, "dp")
    second_info = read_json(run.prepare_json)
    assert [r.arm for r in ledger.releases(source)] == ["length", "length"]
    assert second_info["length_release"]["ledger"]["entry"] != first.id
    resolve_length_bound(cfg, run, "dp")  # a later stage keeps the bound: no third draw, no third charge
    assert len(ledger.releases(source)) == 2

    api.train(cfg, tmp_path, progress=False)
    privacy = read_json(run.privacy_json("dp"))
    spent = ledger.spent(source, privacy["delta"], privacy["accountant"])
    assert spent > privacy["epsilon"]  # both draws and the arm: the first draw is not forgotten
    from dpsynth.privacy.accounting import Mechanism, epsilon

    composed = epsilon(
        [*first.mechanisms, *(Mechanism.from_json(m) for m in privacy["mechanisms"])],
        privacy["delta"],
        privacy["accountant"],
    )
    assert spent == pytest.approx(composed, rel=1e-6)


def test_a_draw_over_the_budget_is_refused_before_it_is_made(tmp_path, tiny_model_dir, monkeypatch):
    from dpsynth.data.prepare import prepare_data
    from dpsynth.errors import BudgetExceededError
    from dpsynth.train import length as length_module

    cfg = _cfg(tiny_model_dir)
    run = RunDir(tmp_path)
    prepare_data(cfg.data, run)
    info = read_json(run.prepare_json)
    ledger = Ledger(Path(os.environ["DPSYNTH_LEDGER"]))
    ledger.set_budget(info["source"]["fingerprint"], epsilon=0.01, delta=1e-5)
    touched = []
    for name in ("read_records", "release_length"):  # neither a private record read nor noise drawn
        monkeypatch.setattr(length_module, name, lambda *a, _n=name, **k: touched.append(_n))
    with pytest.raises(BudgetExceededError):
        resolve_length_bound(cfg, run, "dp")
    assert touched == []
    assert read_json(run.prepare_json) == info  # nothing drawn, nothing written
    assert ledger.releases(info["source"]["fingerprint"], include_pending=True) == []


def test_an_arm_charged_to_another_ledger_charges_the_length_itself(tmp_path, tiny_model_dir, monkeypatch):
    """The draw was charged to the ledger prepare saw; an arm trained under another (another DPSYNTH_LEDGER, a copied
    run directory) must not leave the length out of the only ledger it writes to."""
    cfg = _cfg(tiny_model_dir)
    api.prepare(cfg, tmp_path / "run")
    other = tmp_path / "other.sqlite"
    monkeypatch.setenv("DPSYNTH_LEDGER", str(other))
    api.train(cfg, tmp_path / "run", progress=False)
    privacy = read_json(RunDir(tmp_path / "run").privacy_json("dp"))
    (entry,) = Ledger(other).releases()
    assert "length_histogram" in {m.name for m in entry.mechanisms}
    assert "charged_before" not in privacy["ledger"]
    assert entry.epsilon == pytest.approx(privacy["epsilon"], rel=1e-9)


def test_the_exact_and_public_modes_charge_nothing(tmp_path, tiny_model_dir):
    from dpsynth.data.prepare import prepare_data

    cfg = _cfg(tiny_model_dir)
    for mode in ("exact", "public"):
        run = RunDir(tmp_path / mode)
        prepare_data(cfg.data, run)
        info = resolve_length_bound(cfg, run, mode)
        assert "ledger" not in info["length_release"]
        assert Ledger(Path(os.environ["DPSYNTH_LEDGER"])).releases(info["source"]["fingerprint"]) == []


def test_an_arm_prepared_before_draws_were_charged_charges_the_length_itself(tmp_path, tiny_model_dir):
    """A run prepared before 2026-12-06 holds a DP draw with no ledger entry: its arm charges the length, as then."""
    cfg = _cfg(tiny_model_dir, "ledger.enabled=false")
    api.prepare(cfg, tmp_path)
    run = RunDir(tmp_path)
    info = read_json(run.prepare_json)
    assert info["length_release"]["ledger"] is None
    del info["length_release"]["ledger"]
    from dpsynth.rundir import write_json

    write_json(run.prepare_json, info)
    cfg = _cfg(tiny_model_dir)
    api.train(cfg, tmp_path, progress=False)
    (entry,) = Ledger(Path(os.environ["DPSYNTH_LEDGER"])).releases(info["source"]["fingerprint"])
    assert entry.arm == "dp" and "length_histogram" in {m.name for m in entry.mechanisms}
    privacy = read_json(run.privacy_json("dp"))
    assert "charged_before" not in privacy["ledger"]
    assert entry.epsilon == pytest.approx(privacy["epsilon"], rel=1e-9)


def test_noise_differs_across_runs_without_a_noise_seed(tmp_path, tiny_model_dir):
    cfg = _cfg(tiny_model_dir)
    counts = []
    for name in ("a", "b"):
        api.prepare(cfg, tmp_path / name)
        counts.append(read_json(RunDir(tmp_path / name).prepare_json)["length_release"]["noisy_counts"])
    assert counts[0] != counts[1]


def test_public_mode_reads_no_private_record(tmp_path, tiny_model_dir, monkeypatch):
    from dpsynth.data.prepare import prepare_data

    cfg = _cfg(tiny_model_dir, "data.max_tokens_public=16")
    run = RunDir(tmp_path)
    prepare_data(cfg.data, run)
    assert read_json(run.prepare_json)["max_tokens"] == "auto"
    run.train.unlink()  # nothing to read: public mode must not try
    info = resolve_length_bound(cfg, run, "public")
    assert info["max_tokens"] == 16 and info["length_release"] == {"mode": "public", "max_tokens": 16}


def test_the_dp_arm_refuses_an_exact_or_unreleased_bound(tmp_path, tiny_model_dir):
    from dpsynth.data.prepare import prepare_data

    cfg = _cfg(tiny_model_dir)
    run = RunDir(tmp_path)
    prepare_data(cfg.data, run)
    with pytest.raises(DPSynthError, match="not yet released"):
        api.train(cfg, tmp_path, progress=False)
    resolve_length_bound(cfg, run, "exact")
    with pytest.raises(DPSynthError, match="without noise"):
        api.train(cfg, tmp_path, progress=False)


def test_private_evolution_needs_a_number(tiny_model_dir):
    with pytest.raises(ConfigError, match="generator=pe"):
        _cfg(tiny_model_dir, "generator=pe")


def test_a_bad_grid_is_a_config_error(tiny_model_dir):
    with pytest.raises(ConfigError, match="max_tokens_grid"):
        _cfg(tiny_model_dir, "data.max_tokens_grid=[64,32]")


def test_the_command_line_says_the_released_bound(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from dpsynth.cli import app

    args = ["prepare", "--out", str(tmp_path / "r"), f"model.name={tiny_model_dir}", "data.demo_records=80"]
    result = CliRunner().invoke(app, [*args, "data.max_tokens=auto", GRID])
    assert result.exit_code == 0, result.output
    bound = read_json(RunDir(tmp_path / "r").prepare_json)["max_tokens"]
    assert f"length bound: {bound} tokens, released with DP" in result.output
