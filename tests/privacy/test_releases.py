"""A release whose plan holds a mechanism the ledger charged before (the length bound, drawn at prepare): its own
entry leaves it out, its commit is idempotent, and the source's composition counts every mechanism once."""

from __future__ import annotations

import pytest

from dpsynth.privacy import accounting, releases
from dpsynth.privacy.accounting import Mechanism, dp_sgd_mechanism
from dpsynth.privacy.config import LedgerConfig
from dpsynth.privacy.ledger import Ledger
from dpsynth.privacy.length import length_mechanism
from dpsynth.rundir import read_json, write_json

DELTA = 1e-5
INFO = {"source": {"fingerprint": "sha256:ab12"}, "privacy_unit": "user"}


class _Plan:
    delta = DELTA
    accountant = "prv"

    def __init__(self, mechs: list[Mechanism]) -> None:
        self._mechs = mechs

    def mechanisms(self) -> list[Mechanism]:
        return list(self._mechs)


def test_an_entry_leaves_out_what_was_charged_before_and_commits_once(tmp_path):
    cfg = LedgerConfig(path=tmp_path / "ledger.sqlite")
    length = length_mechanism(30.0, [32, 64, 128])
    sgd = dp_sgd_mechanism(0.9, 0.05, 40, max_grad_norm=1.0)
    first = releases.reserve_mechanisms(
        cfg, [length], delta=DELTA, accountant="prv", info=INFO, run_dir=tmp_path, arm="length"
    )
    assert first is not None
    releases.commit_entry(first, [length], epsilon=accounting.epsilon([length], DELTA, "prv"), delta=DELTA, files=[])

    whole = [sgd, length]
    entry = releases.reserve_release(
        cfg, _Plan(whole), INFO, tmp_path, "dp", charged_before={length.name: int(first["entry"])}
    )
    assert entry is not None and entry["charged_before"] == {"length_histogram": first["entry"]}
    ledger = Ledger.from_config(cfg)  # DPSYNTH_LEDGER (the tests set it) wins over the configured path
    (pending,) = [r for r in ledger.releases(include_pending=True) if r.pending]
    assert [m.name for m in pending.mechanisms] == ["dp_sgd"]  # reserved without the length histogram

    eps_whole = accounting.epsilon(whole, DELTA, "prv")
    privacy = {
        "epsilon": eps_whole,  # privacy.json states the whole
        "delta": DELTA,
        "accountant": "prv",
        "mechanisms": [m.to_json() for m in whole],
        "ledger": entry,
    }
    path = tmp_path / "privacy.json"
    write_json(path, privacy)
    releases.commit_release(privacy, path, [])
    again = releases.commit_release(read_json(path) | {"ledger": {**entry, "status": "pending"}}, path, [])
    assert again["ledger"]["status"] == "committed"  # a resume's second commit is the same release
    arm = [r for r in ledger.releases() if r.arm == "dp"]
    assert len(arm) == 1 and [m.name for m in arm[0].mechanisms] == ["dp_sgd"]
    assert arm[0].epsilon == pytest.approx(accounting.epsilon([sgd], DELTA, "prv"), rel=1e-9)
    assert arm[0].epsilon < eps_whole
    assert read_json(path)["ledger"]["composed_epsilon"] == pytest.approx(eps_whole, rel=1e-6)
    assert read_json(path)["epsilon"] == eps_whole
