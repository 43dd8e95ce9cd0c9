"""The ledger: composition across releases, the budget check, pending reservations, crash safety, no private text."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from dpsynth.errors import BudgetExceededError, ConfigError, DPSynthError, PrivacyCheckError
from dpsynth.privacy.accounting import dp_sgd_mechanism, epsilon, histogram_mechanism
from dpsynth.privacy.config import LedgerConfig
from dpsynth.privacy.ledger import ENV_VAR, Ledger, default_ledger_path

SOURCE = "sha256:" + "ab" * 32
DELTA = 1e-5


def release_mechs(sigma: float = 1.0, steps: int = 200):
    return [histogram_mechanism(8.0, 5), dp_sgd_mechanism(sigma, 0.02, steps, max_grad_norm=1.0)]


def do_release(led: Ledger, run_dir: Path, mechs, *, accountant="rdp", arm="dp", files=()):
    eid = led.begin(
        SOURCE, planned=mechs, delta=DELTA, accountant=accountant, privacy_unit="user", run_dir=run_dir, arm=arm
    )
    return led.commit(eid, mechanisms=mechs, epsilon=epsilon(mechs, DELTA, accountant), delta=DELTA, files=list(files))


def row_count(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT COUNT(*) FROM releases").fetchone()[0]
    finally:
        con.close()


def room_for_one(mechs) -> float:
    """A budget between the epsilon of one release and of two composed."""
    return (epsilon(mechs, DELTA, "rdp") + epsilon(mechs * 2, DELTA, "rdp")) / 2


@pytest.fixture()
def led(tmp_path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite")


def test_two_releases_compose_and_a_third_over_budget_writes_nothing(led, tmp_path):
    one = release_mechs()
    two, three = epsilon(one * 2, DELTA, "rdp"), epsilon(one * 3, DELTA, "rdp")
    led.set_budget(SOURCE, epsilon=(two + three) / 2, delta=DELTA)  # room for two composed releases, not three
    r1 = do_release(led, tmp_path / "run1", one)
    r2 = do_release(led, tmp_path / "run2", one)
    both = epsilon([*one, *one], DELTA, "rdp")
    assert led.spent(SOURCE, DELTA, "rdp") == pytest.approx(both)
    assert max(r1.epsilon, r2.epsilon) < both < r1.epsilon + r2.epsilon  # tighter than summing
    assert r2.composed_epsilon == pytest.approx(both) and r2.composed_delta == DELTA

    before = row_count(led.path)
    with pytest.raises(BudgetExceededError) as err:
        led.begin(
            SOURCE, planned=one, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path / "run3", arm="dp"
        )
    msg = str(err.value)
    assert "committed releases spend" in msg and "this release needs" in msg and "left" in msg
    assert row_count(led.path) == before  # nothing written, not even a pending row
    assert [r.id for r in led.releases(SOURCE, include_pending=True)] == [r1.id, r2.id]


def test_pending_reservation_counts_against_the_budget(led, tmp_path):
    one = release_mechs()
    led.set_budget(SOURCE, epsilon=room_for_one(one), delta=DELTA)
    led.begin(SOURCE, planned=one, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path / "a", arm="dp")
    with pytest.raises(BudgetExceededError, match="pending"):
        led.begin(
            SOURCE, planned=one, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path / "b", arm="dp"
        )


def test_concurrent_runs_cannot_overspend(led, tmp_path):
    one = release_mechs()
    led.set_budget(SOURCE, epsilon=room_for_one(one), delta=DELTA)
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def run(i: int) -> None:
        barrier.wait()
        try:
            led.begin(
                SOURCE, planned=one, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path / f"r{i}",
                arm="dp",
            )  # fmt: skip
            outcomes.append("reserved")
        except BudgetExceededError:
            outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused", "refused", "refused", "reserved"]


def test_resume_returns_the_same_pending_entry(led, tmp_path):
    one = release_mechs()
    kwargs = dict(delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path / "run", arm="dp")
    first = led.begin(SOURCE, planned=one, **kwargs)
    again = led.begin(SOURCE, planned=one, **kwargs)
    assert again == first
    led.set_budget(SOURCE, epsilon=0.01, delta=DELTA)  # lowered meanwhile: the granted reservation still resumes
    assert led.begin(SOURCE, planned=one, **kwargs) == first
    with pytest.raises(BudgetExceededError):  # but a changed plan is checked again
        led.begin(SOURCE, planned=release_mechs(steps=400), **kwargs)
    led.set_budget(SOURCE, epsilon=100.0, delta=DELTA)
    assert len(led.releases(include_pending=True)) == 1
    # another arm of the same run is a different release
    assert led.begin(SOURCE, planned=one, **{**kwargs, "arm": "dp2"}) != first
    # a resume with a changed plan updates the reservation instead of adding one
    bigger = release_mechs(steps=400)
    assert led.begin(SOURCE, planned=bigger, **kwargs) == first
    (entry,) = [r for r in led.releases(include_pending=True) if r.id == first]
    assert entry.mechanisms == tuple(bigger)


def test_commit_is_idempotent_and_checks_the_epsilon(led, tmp_path):
    one = release_mechs()
    eid = led.begin(SOURCE, planned=one, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path, arm="dp")
    eps = epsilon(one, DELTA, "rdp")
    with pytest.raises(PrivacyCheckError, match="claimed epsilon"):
        led.commit(eid, mechanisms=one, epsilon=eps / 2, delta=DELTA, files=[])
    first = led.commit(eid, mechanisms=one, epsilon=eps, delta=DELTA, files=[])
    second = led.commit(eid, mechanisms=one, epsilon=eps, delta=DELTA, files=[])
    assert first == second
    assert len(led.releases(SOURCE)) == 1
    with pytest.raises(DPSynthError, match="already committed"):
        led.commit(eid, mechanisms=release_mechs(steps=10), epsilon=eps, delta=DELTA, files=[])
    with pytest.raises(DPSynthError, match="never removed"):
        led.abandon(eid)


def test_a_crash_leaves_a_reservation_not_a_release(led, tmp_path, monkeypatch):
    one = release_mechs()
    eid = led.begin(SOURCE, planned=one, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path, arm="dp")
    # crash inside commit's transaction: it rolls back, the entry stays pending
    import dpsynth.privacy.ledger as ledger_mod

    calls = {"n": 0}
    real = ledger_mod.accounting.epsilon

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # after the check, while composing
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger_mod.accounting, "epsilon", dying)
    with pytest.raises(KeyboardInterrupt):
        led.commit(eid, mechanisms=one, epsilon=epsilon(one, DELTA, "rdp"), delta=DELTA, files=[])
    monkeypatch.undo()

    reopened = Ledger(led.path)  # as a new process would see it
    assert reopened.releases() == []
    (pending,) = reopened.releases(include_pending=True)
    assert pending.pending and pending.id == eid
    assert reopened.spent(SOURCE, DELTA, "rdp") == 0.0
    assert reopened.spent(SOURCE, DELTA, "rdp", include_pending=True) > 0
    reopened.abandon(eid)
    assert reopened.releases(include_pending=True) == []
    with pytest.raises(DPSynthError, match="abandoned"):
        reopened.commit(eid, mechanisms=one, epsilon=epsilon(one, DELTA, "rdp"), delta=DELTA, files=[])


def test_prv_ledger_and_differing_deltas_compose_at_the_budget_delta(led, tmp_path):
    one = release_mechs()
    led.set_budget(SOURCE, epsilon=50.0, delta=1e-6)
    eid = led.begin(
        SOURCE, planned=one, delta=1e-5, accountant="prv", privacy_unit="user", run_dir=tmp_path / "a", arm="dp"
    )
    r1 = led.commit(eid, mechanisms=one, epsilon=epsilon(one, 1e-5, "prv"), delta=1e-5, files=[])
    assert r1.delta == 1e-5 and r1.composed_delta == 1e-6
    assert r1.composed_epsilon == pytest.approx(epsilon(one, 1e-6, "prv"))
    assert r1.composed_epsilon > r1.epsilon  # the same mechanisms at the smaller budget delta


def test_files_are_recorded_as_paths_and_hashes(led, tmp_path):
    out = tmp_path / "run" / "dp"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "weights.bin").write_bytes(b"\x00\x01")
    (out / "privacy.json").write_text("{}")
    rel = do_release(led, tmp_path / "run", release_mechs(), files=[out / "adapter", out / "privacy.json"])
    kinds = {Path(f.path).name: (f.kind, len(f.sha256 or "")) for f in rel.files}
    assert kinds == {"adapter": ("dir", 64), "privacy.json": ("file", 64)}


def test_ledger_never_holds_private_text(led, tmp_path):
    planted = "PLANTED-SECRET My neighbour Alice Smith hates her vacuum cleaner"
    # what the pipeline passes: a fingerprint (a hash of the records), parameters, paths of files holding the text
    import hashlib

    source = "sha256:" + hashlib.sha256(planted.encode()).hexdigest()
    data = tmp_path / "run" / "data" / "train.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text(json.dumps({"text": planted}) + "\n")
    mechs = release_mechs()
    led.set_budget(source, epsilon=100, delta=DELTA)
    eid = led.begin(
        source, planned=mechs, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path / "run", arm="dp"
    )
    led.commit(eid, mechanisms=mechs, epsilon=epsilon(mechs, DELTA, "rdp"), delta=DELTA, files=[data])
    raw = b"".join(p.read_bytes() for p in led.path.parent.glob("ledger.sqlite*"))
    for fragment in ("PLANTED-SECRET", "Alice Smith", "vacuum"):
        assert fragment.encode() not in raw
    # and text that looks like a record is refused where an identifier is expected
    with pytest.raises(ConfigError, match="identifier"):
        led.begin(planted, planned=mechs, delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path, arm="x")


def test_default_path_and_default_budget(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_ledger_path(LedgerConfig(path=tmp_path / "cfg.sqlite")) == tmp_path / "cfg.sqlite"
    assert default_ledger_path().name == "ledger.sqlite"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env.sqlite"))
    assert default_ledger_path(LedgerConfig(path=tmp_path / "cfg.sqlite")) == tmp_path / "env.sqlite"

    led = Ledger.from_config(LedgerConfig(source_epsilon_budget=0.5))
    assert led.path == tmp_path / "env.sqlite"
    with pytest.raises(BudgetExceededError):  # the default budget applies to a new source
        led.begin(
            SOURCE, planned=release_mechs(), delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path,
            arm="dp",
        )  # fmt: skip
    budget = led.get_budget(SOURCE)
    assert budget is None  # the refused transaction did not even keep the default budget it would have set
    with pytest.raises(ConfigError, match="at least one mechanism"):
        led.begin(SOURCE, planned=[], delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path, arm="dp")


def test_a_killed_process_mid_commit_leaves_only_the_reservation(led, tmp_path):
    """A real crash: the child process dies (os._exit, no cleanup) inside commit's open transaction."""
    child = textwrap.dedent(
        f"""
        import os
        import dpsynth.privacy.ledger as L
        from dpsynth.privacy.accounting import dp_sgd_mechanism, epsilon, histogram_mechanism
        m = [histogram_mechanism(8.0, 5), dp_sgd_mechanism(1.0, 0.02, 200, max_grad_norm=1.0)]
        led = L.Ledger({str(led.path)!r})
        eid = led.begin({SOURCE!r}, planned=m, delta={DELTA!r}, accountant="rdp", privacy_unit="user",
                        run_dir={str(tmp_path)!r}, arm="dp")
        eps = epsilon(m, {DELTA!r}, "rdp")
        real = L.accounting.epsilon
        calls = []
        def die(*a, **k):
            calls.append(1)
            if len(calls) == 2:  # inside the write transaction, before its COMMIT
                os._exit(9)
            return real(*a, **k)
        L.accounting.epsilon = die
        led.commit(eid, mechanisms=m, epsilon=eps, delta={DELTA!r}, files=[])
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert led.releases() == []
    (entry,) = led.releases(include_pending=True)
    assert entry.pending
    # the lock died with the process: the ledger is usable, and a resume commits the release
    again = led.begin(
        SOURCE, planned=list(entry.mechanisms), delta=DELTA, accountant="rdp", privacy_unit="user", run_dir=tmp_path,
        arm="dp",
    )  # fmt: skip
    assert again == entry.id
    rel = led.commit(
        again, mechanisms=list(entry.mechanisms), epsilon=epsilon(entry.mechanisms, DELTA, "rdp"), delta=DELTA, files=[]
    )
    assert rel.status == "committed" and [r.id for r in led.releases()] == [entry.id]
