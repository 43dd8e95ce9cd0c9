"""Privacy units: pseudonymous ids, the per-user contribution bound, the split by unit."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.data.schemas import RawRecord
from dpsynth.data.units import bound_records, build_units, split_units


def _raw(users):
    return [RawRecord(line=i + 1, text=f"text {i}", user=u, codes={"rating": 5}) for i, u in enumerate(users)]


def test_record_units():
    units, dropped = build_units(_raw(["a", "a", None]), privacy_unit="record", max_records_per_user=1, seed=0)
    assert dropped == 0
    assert [[r.unit for r in u] for u in units] == [["r0"], ["r1"], ["r2"]]


def test_user_units_are_pseudonymous_and_salted():
    raws = _raw(["alice", "bob", "alice"])
    units, _ = build_units(raws, privacy_unit="user", max_records_per_user=5, seed=0)
    ids = [u[0].unit for u in units]
    assert len(ids) == 2 and all(i.startswith("u") and "alice" not in i and "bob" not in i for i in ids)
    assert [len(u) for u in units] == [2, 1]
    again, _ = build_units(raws, privacy_unit="user", max_records_per_user=5, seed=0)
    assert [u[0].unit for u in again] != ids  # a fresh secret salt each run: ids cannot be linked across runs
    fixed = [build_units(raws, privacy_unit="user", max_records_per_user=5, seed=0, salt=b"s" * 32)[0] for _ in "ab"]
    assert [u[0].unit for u in fixed[0]] == [u[0].unit for u in fixed[1]]


def test_user_unit_refuses_records_without_user():
    with pytest.raises(ValueError, match="without a user id"):
        build_units(_raw([None]), privacy_unit="user", max_records_per_user=1, seed=0)


@settings(max_examples=40, deadline=None)
@given(
    users=st.lists(st.sampled_from("abcdefg"), min_size=1, max_size=60),
    k=st.integers(1, 4),
    seed=st.integers(0, 10**6),
)
def test_contribution_bound(users, k, seed):
    units, dropped = build_units(_raw(users), privacy_unit="user", max_records_per_user=k, seed=seed)
    per_user = Counter(users)
    assert len(units) == len(per_user)
    assert all(1 <= len(u) <= k for u in units)
    assert sorted(len(u) for u in units) == sorted(min(k, n) for n in per_user.values())
    assert dropped == sum(max(0, n - k) for n in per_user.values())
    for u in units:
        lines = [int(r.text.split()[1]) for r in u]
        assert lines == sorted(lines)  # file order kept


def test_bound_choice_is_seeded_and_random():
    records = list(range(20))
    import random

    picks = {tuple(bound_records(records, 3, random.Random(s))) for s in range(30)}
    assert len(picks) > 20  # not always the first k
    assert bound_records(records, 3, random.Random(1)) == bound_records(records, 3, random.Random(1))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 80), frac=st.floats(0.05, 0.95), seed=st.integers(0, 10**6))
def test_split_is_by_unit_and_disjoint(n, frac, seed):
    units = [f"unit{i}" for i in range(n)]
    train, test = split_units(units, test_fraction=frac, seed=seed)
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(units)
    if n >= 2:
        assert 1 <= len(test) <= n - 1
        assert len(test) == min(max(round(frac * n), 1), n - 1)
    assert train == sorted(train, key=units.index) and test == sorted(test, key=units.index)
    assert (train, test) == split_units(units, test_fraction=frac, seed=seed)


def test_split_depends_on_seed():
    units = list(range(50))
    assert split_units(units, test_fraction=0.2, seed=0) != split_units(units, test_fraction=0.2, seed=1)
