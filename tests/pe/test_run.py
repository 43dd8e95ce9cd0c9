"""``dpsynth run generator=pe`` end to end on a tiny Llama and the demo data: files, the ledger charge, evaluation and
report of the ``pe`` arm, and resume after a crash (no second charge, no finished iteration voted on again)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dpsynth import api
from dpsynth.cli import app
from dpsynth.config import load_config
from dpsynth.errors import DPSynthError
from dpsynth.pe import run as pe_run
from dpsynth.privacy.accounting import PE_HISTOGRAM, epsilon
from dpsynth.privacy.ledger import Ledger
from dpsynth.rundir import RunDir, read_json, read_jsonl

FIELDS = {"index", "arm", "text", "codes"}


def _overrides(model_dir) -> list[str]:
    return [
        f"model.name={model_dir}",
        "generator=pe",
        "data.demo_records=80",
        "data.max_tokens=24",
        "generate.num_records=6",
        "generate.max_new_tokens=8",
        "generate.batch_size=16",
        "pe.iterations=2",
        "pe.variations=1",
        "privacy.target_epsilon=4",
        "evaluate.max_records=40",
        "evaluate.num_samples=3",
    ]


@pytest.fixture(scope="module")
def pe_run_dir(tmp_path_factory, tiny_model_dir):
    """One PE run through the CLI for the module, on its own ledger (reused by the tests that look at it)."""
    with pytest.MonkeyPatch.context() as mp:
        ledger = tmp_path_factory.mktemp("pe-ledger") / "ledger.sqlite"
        mp.setenv("DPSYNTH_LEDGER", str(ledger))
        out = tmp_path_factory.mktemp("pe") / "run"
        result = CliRunner().invoke(app, ["run", "--out", str(out), "--quiet", *_overrides(tiny_model_dir)])
        assert result.exit_code == 0, result.output
    return RunDir(out), ledger, result.output


def test_pe_writes_its_records_guarantee_and_log(pe_run_dir):
    run, _, output = pe_run_dir
    rows = read_jsonl(run.generated("pe"))
    assert len(rows) == 6
    assert all(set(r) >= FIELDS and r["arm"] == "pe" for r in rows)
    assert all(set(r["codes"]) == {"rating", "category"} for r in rows)
    assert not (run.root / "dp").exists() and not (run.root / "no_dp").exists()  # nothing was fine-tuned
    assert not run.checkpoints("pe").exists()  # the private checkpoint (noise state) is gone
    privacy = read_json(run.privacy_json("pe"))
    assert privacy["dp"] and privacy["generator"] == "pe" and privacy["iterations"] == 2
    assert privacy["epsilon"] <= 4.0 + 1e-9
    names = [m["name"] for m in privacy["mechanisms"]]
    assert names == ["gaussian_histogram", PE_HISTOGRAM]
    log = read_jsonl(run.arm("pe") / "pe_log.jsonl")
    assert [e["iteration"] for e in log] == [0, 1, 2]
    assert log[1]["population"] == 12 and log[2]["population"] == 12 and log[2]["selected"] == 6  # N (1 + L)
    assert read_json(run.control_codes("pe"))["dp"] is True
    assert "generated_sequences_pe.jsonl" in output and "DP synthetic data" in output


def test_the_ledger_holds_one_committed_pe_release_with_the_stated_epsilon(pe_run_dir):
    run, ledger_path, _ = pe_run_dir
    privacy = read_json(run.privacy_json("pe"))
    releases = Ledger(ledger_path).releases()
    assert len(releases) == 1
    (rel,) = releases
    assert rel.arm == "pe" and rel.status == "committed"
    assert privacy["ledger"]["entry"] == rel.id and privacy["ledger"]["status"] == "committed"
    assert rel.epsilon == pytest.approx(privacy["epsilon"])
    assert rel.epsilon == pytest.approx(epsilon(rel.mechanisms, rel.delta, "prv"))
    (pe,) = [m for m in rel.mechanisms if m.name == PE_HISTOGRAM]
    assert pe.steps == 2 and pe.sample_rate == 1.0 and pe.noise_multiplier == privacy["noise_multiplier"]


def test_evaluate_and_the_report_treat_pe_as_an_arm(pe_run_dir):
    run, _, _ = pe_run_dir
    doc = read_json(run.metrics_json)
    assert doc["run"]["arms"] == ["pe"] and doc["run"]["n_synthetic"] == {"pe": 6}
    assert doc["run"]["dp"]["epsilon"] == read_json(run.privacy_json("pe"))["epsilon"]
    pe_metrics = {m["name"] for m in doc["metrics"] if m["arm"] == "pe"}
    assert {"fidelity.mauve", "utility.tfidf.rating.accuracy", "quality.well_formed.rate"} <= pe_metrics
    assert read_json(run.eval_privacy_json)["dp_arm_ledger"]["status"] == "committed"
    html = run.report_html.read_text()
    assert "DP synthetic (Private Evolution)" in html and "pe/privacy.json" in html
    assert "iterations (vote histograms)" in html and "DP-SGD" not in html  # PE's guarantee in PE's terms


def test_a_crashed_run_resumes_without_a_second_charge_or_a_second_vote(tmp_path, tiny_model_dir, monkeypatch):
    cfg = load_config(None, [*_overrides(tiny_model_dir), "pe.iterations=3"])
    out = tmp_path / "run"
    api.prepare(cfg, out)
    calls = {"n": 0}
    real_votes = pe_run.nearest_votes

    def crash_on_second_iteration(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash in iteration 2")
        return real_votes(*args, **kwargs)

    monkeypatch.setattr(pe_run, "nearest_votes", crash_on_second_iteration)
    with pytest.raises(KeyboardInterrupt):
        api.generate(cfg, out, progress=False)
    run = RunDir(out)
    state = read_json(run.checkpoints("pe") / "state.json")
    assert state["iteration"] == 1
    first = state["log"][1]
    ledger = Ledger.from_config(cfg.ledger)
    assert [r.status for r in ledger.releases(include_pending=True)] == ["pending"]

    with pytest.raises(DPSynthError, match="--resume"):  # a plain rerun would start over on a reserved release
        api.generate(cfg, out, progress=False)
    calls["n"] = 10  # no more crashes
    api.generate(cfg, out, progress=False, resume=True)
    assert calls["n"] == 12  # iterations 2 and 3 voted; iteration 1 was not voted on again
    log = read_jsonl(run.arm("pe") / "pe_log.jsonl")
    assert [e["iteration"] for e in log] == [0, 1, 2, 3]
    assert log[1] == first  # iteration 1's release is the one before the crash (same noisy counts)
    releases = ledger.releases(include_pending=True)
    assert len(releases) == 1 and releases[0].status == "committed"
    (pe,) = [m for m in releases[0].mechanisms if m.name == PE_HISTOGRAM]
    assert pe.steps == 3
    # a resume of a finished run neither runs nor charges again
    api.generate(cfg, out, progress=False, resume=True)
    assert calls["n"] == 12 and len(ledger.releases(include_pending=True)) == 1


def test_train_refuses_generator_pe_and_says_what_to_run(pe_run_dir, tiny_model_dir):
    """PE never trains: `dpsynth train generator=pe` must not quietly fine-tune a model (a DP-SGD release the user
    did not ask for); it exits with the command to use, and the run directory gains no trained arm."""
    run, _, _ = pe_run_dir
    result = CliRunner().invoke(app, ["train", "--out", str(run.root), "--quiet", *_overrides(tiny_model_dir)])
    assert result.exit_code != 0
    assert "generator=pe trains nothing" in result.output and "dpsynth generate" in result.output
    assert not run.adapter("dp").exists() and not run.adapter("no_dp").exists()


def test_the_audit_refuses_generator_pe(tmp_path, tiny_model_dir):
    """The one-run audit fine-tunes DP-SGD arms: on a PE run that would release a model nobody asked for."""
    from dpsynth.errors import ConfigError

    with pytest.raises(ConfigError, match="generator=pe trains nothing"):
        api.audit(load_config(None, _overrides(tiny_model_dir)), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_pe_draws_its_quotas_with_the_configured_code_power(tmp_path, tiny_model_dir, monkeypatch):
    """generate.code_power reaches Private Evolution's code draw (its per-cell quotas), not only the generate stage."""
    from dpsynth.generate import stage

    monkeypatch.setenv("DPSYNTH_LEDGER", str(tmp_path / "ledger.sqlite"))
    cfg = load_config(None, [*_overrides(tiny_model_dir), "pe.iterations=1", "generate.code_power={rating: 0}"])
    api.prepare(cfg, tmp_path / "run")
    seen = []
    real = stage.sample_codes

    def recording(release, names, n, seed, power=1.0):
        seen.append(power)
        return real(release, names, n, seed, power)

    monkeypatch.setattr(stage, "sample_codes", recording)
    api.generate(cfg, tmp_path / "run", progress=False)
    assert seen == [{"rating": 0.0}]
