"""``dpsynth budget show|set`` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dpsynth.privacy.accounting import dp_sgd_mechanism, epsilon, histogram_mechanism
from dpsynth.privacy.cli import budget_app
from dpsynth.privacy.ledger import ENV_VAR, Ledger

SOURCE = "sha256:" + "cd" * 32
DELTA = 1e-5
runner = CliRunner()


@pytest.fixture()
def ledger_path(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    return tmp_path / "ledger.sqlite"


def mechs():
    return [histogram_mechanism(8.0, 5), dp_sgd_mechanism(1.0, 0.02, 200, max_grad_norm=1.0)]


def test_set_then_show_lists_releases_pending_and_what_is_left(ledger_path, tmp_path):
    led = Ledger(ledger_path)
    m = mechs()
    eid = led.begin(
        SOURCE, planned=m, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path / "r1", arm="dp"
    )
    led.commit(eid, mechanisms=m, epsilon=epsilon(m, DELTA, "rdp"), delta=DELTA, files=[])
    res = runner.invoke(budget_app, ["set", SOURCE, "--epsilon", "10", "--delta", "1e-5", "--ledger", str(ledger_path)])
    assert res.exit_code == 0, res.output
    assert "ε = 10" in res.output and f"already spent or reserved: {epsilon(m, DELTA, 'rdp'):.4g}" in res.output

    led.begin(SOURCE, planned=m, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path / "r2", arm="dp")

    res = runner.invoke(budget_app, ["show", SOURCE, "--ledger", str(ledger_path)], env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    out = res.output
    assert "committed" in out and "PENDING" in out
    assert "dp_sgd" in out and "gaussian_histogram" in out
    spent = epsilon(m, DELTA, "rdp")
    reserved = epsilon(m * 2, DELTA, "rdp")
    assert f"ε = {spent:.4g} at δ = 1e-05" in out
    assert f"with pending reservations: ε = {reserved:.4g}" in out
    assert f"left: {10 - reserved:.4g}" in out

    res = runner.invoke(budget_app, ["show", "--ledger", str(ledger_path)], env={"COLUMNS": "220"})  # all sources
    assert res.exit_code == 0 and SOURCE in res.output

    pending_id = next(r.id for r in led.releases(SOURCE, include_pending=True) if r.pending)
    res = runner.invoke(budget_app, ["abandon", str(eid), "--ledger", str(ledger_path)])
    assert res.exit_code != 0 and "never removed" in res.output  # a committed release stays
    res = runner.invoke(budget_app, ["abandon", str(pending_id), "--ledger", str(ledger_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(budget_app, ["show", SOURCE, "--ledger", str(ledger_path)], env={"COLUMNS": "220"})
    assert "PENDING" not in res.output and f"left: {10 - spent:.4g}" in res.output


def test_errors_are_messages_with_a_nonzero_exit(ledger_path):
    res = runner.invoke(budget_app, ["set", SOURCE, "--epsilon", "-1", "--delta", "1e-5", "--ledger", str(ledger_path)])
    assert res.exit_code != 0
    assert "budget needs epsilon > 0" in res.output
    assert "Traceback" not in res.output

    Ledger(ledger_path).set_budget(SOURCE, 1.0, 1e-5)
    res = runner.invoke(budget_app, ["show", "sha256:unknown", "--ledger", str(ledger_path)])
    assert res.exit_code != 0 and "unknown source" in res.output

    res = runner.invoke(budget_app, ["show", "--accountant", "gdp", "--ledger", str(ledger_path)])
    assert res.exit_code != 0 and "unknown accountant" in res.output


def test_show_without_a_ledger_says_so(ledger_path):
    res = runner.invoke(budget_app, ["show", "--ledger", str(ledger_path)])
    assert res.exit_code == 0 and "nothing has been released" in res.output
    assert not ledger_path.exists()  # showing does not create a ledger


@pytest.mark.parametrize("columns", [80, 200])
def test_show_table_is_never_cropped(ledger_path, tmp_path, columns):
    """Rich crops a table wider than the terminal: every row must keep its right border and every number whole."""
    led = Ledger(ledger_path)
    m = mechs()
    eid = led.begin(
        SOURCE, planned=m, delta=DELTA, accountant="prv", privacy_unit="user", run_dir=tmp_path / "r1", arm="dp"
    )
    led.commit(eid, mechanisms=m, epsilon=epsilon(m, DELTA, "prv"), delta=DELTA, files=[])
    res = runner.invoke(budget_app, ["show", SOURCE, "--ledger", str(ledger_path)], env={"COLUMNS": str(columns)})
    assert res.exit_code == 0, res.output
    rows = [line for line in res.output.splitlines() if line.startswith(("│", "┃", "┏", "┡", "└"))]
    assert rows and all(len(line) <= columns for line in rows)
    assert all(line.endswith(("│", "┃", "┓", "┩", "┘")) for line in rows), "\n".join(rows)
    assert "max_grad_norm=1.0" in res.output and "gaussian_histogram" in res.output


@pytest.mark.parametrize("with_ledger", [False, True])
def test_set_refuses_a_string_that_no_run_is_charged_to(ledger_path, tmp_path, with_ledger):
    """A budget on a string no release is ever charged to would protect nothing while looking as if it did."""
    if with_ledger:
        Ledger(ledger_path).set_budget(SOURCE, 5.0, DELTA)
    unknown = "sha256:" + "ab" * 32  # well-formed, but no source the ledger knows
    for text in (unknown, str(tmp_path / "reviews.csv"), "my-reviews"):
        res = runner.invoke(budget_app, ["set", text, "-e", "1", "-d", "1e-5", "--ledger", str(ledger_path)])
        assert res.exit_code == 2, res.output
        assert "neither a source the ledger knows" in res.output and "dpsynth budget show" in res.output
    assert ledger_path.exists() == with_ledger  # refusing creates no ledger
    if with_ledger:
        assert Ledger(ledger_path).sources() == [SOURCE]


def test_set_accepts_a_prepared_run_directory_and_names_its_fingerprint(ledger_path, tmp_path):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "prepare.json").write_text(json.dumps({"source": {"fingerprint": SOURCE}}), encoding="utf-8")
    res = runner.invoke(budget_app, ["set", str(run), "-e", "3", "-d", "1e-5", "--ledger", str(ledger_path)])
    assert res.exit_code == 0, res.output
    assert f"source {SOURCE}" in res.output
    budget = Ledger(ledger_path).get_budget(SOURCE)
    assert budget is not None and budget.epsilon == 3.0

    res = runner.invoke(budget_app, ["set", str(tmp_path), "-e", "3", "-d", "1e-5", "--ledger", str(ledger_path)])
    assert res.exit_code == 2 and "not a prepared run directory" in res.output
