"""Privacy units, contribution bounding and the train/test split.

A privacy unit is what the DP guarantee protects: one ``record``, or one ``user`` with all their reviews. Each unit
becomes one training example, so a unit's contribution to a gradient is bounded by the clipping norm; a user's records
are first bounded to ``data.max_records_per_user``, chosen at random with an RNG seeded by ``data.seed`` and the user's
own id, so which of a user's records are kept depends on nothing but that user.

User units are named by a keyed hash of the raw user id with a random salt that is never saved: the run directory
holds ``u3fa2...`` ids that nobody, not even the run's owner, can link back to a reviewer id.

The split is by unit (a unit's records are all in train or all in test), seeded, and keeps file order within each
split.

>>> units = [[f"a{i}"] for i in range(10)]
>>> train, test = split_units(units, test_fraction=0.2, seed=0)
>>> len(train), len(test), sorted(train + test) == sorted(units)
(8, 2, True)
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from collections.abc import Sequence
from typing import Literal, TypeVar

from dpsynth.data.records import Record
from dpsynth.data.schemas import RawRecord

T = TypeVar("T")
OVER_USER_BOUND = "over_user_bound"


def pseudonym(user: str, salt: bytes) -> str:
    """A unit id for a raw user id: HMAC-SHA256 keyed by the run's secret salt, 96 bits in hex.

    >>> pseudonym("A2WNBOD3WNDNKT", b"k" * 32) == pseudonym("A2WNBOD3WNDNKT", b"k" * 32)
    True
    >>> pseudonym("A2WNBOD3WNDNKT", b"k" * 32) == pseudonym("A2WNBOD3WNDNKT", b"j" * 32)
    False
    """
    return "u" + hmac.new(salt, user.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def _user_rng(seed: int, user: str) -> random.Random:
    digest = hashlib.sha256(f"dpsynth-bound\x00{seed}\x00{user}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def bound_records(records: Sequence[T], k: int, rng: random.Random) -> list[T]:
    """At most ``k`` of ``records``, chosen uniformly at random, in their original order."""
    if len(records) <= k:
        return list(records)
    keep = sorted(rng.sample(range(len(records)), k))
    return [records[i] for i in keep]


def _record(raw: RawRecord, unit: str) -> Record:
    assert raw.text is not None
    return Record(text=raw.text, unit=unit, codes=dict(raw.codes), title=raw.title, item=raw.item)


def build_units(
    kept: Sequence[RawRecord],
    *,
    privacy_unit: Literal["record", "user"],
    max_records_per_user: int,
    seed: int,
    salt: bytes | None = None,
) -> tuple[list[list[Record]], int]:
    """Group usable records into units (file order of first appearance); returns the units and how many records the
    per-user bound dropped. ``kept`` records must all have a user id when the unit is ``user``.

    ``salt`` is for tests only: by default a fresh random one is drawn and forgotten.
    """
    if privacy_unit == "record":
        return [[_record(r, f"r{i}")] for i, r in enumerate(kept)], 0
    salt = secrets.token_bytes(32) if salt is None else salt
    by_user: dict[str, list[RawRecord]] = {}
    for r in kept:
        if r.user is None:
            raise ValueError("a record without a user id reached build_units with privacy_unit=user")
        by_user.setdefault(r.user, []).append(r)
    units: list[list[Record]] = []
    dropped = 0
    ids: set[str] = set()
    for user, records in by_user.items():
        chosen = bound_records(records, max_records_per_user, _user_rng(seed, user))
        dropped += len(records) - len(chosen)
        unit = pseudonym(user, salt)
        if unit in ids:  # 96-bit ids: never in practice, but two users must never share a unit
            raise RuntimeError("unit id collision; rerun prepare")
        ids.add(unit)
        units.append([_record(r, unit) for r in chosen])
    return units, dropped


def split_units(units: Sequence[T], *, test_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Split whole units into train and test: ``round(test_fraction * n)`` test units (at least one of each when
    there are two or more units), chosen by a seeded shuffle; file order is kept within each part."""
    n = len(units)
    n_test = min(max(round(test_fraction * n), 1), n - 1) if n >= 2 else 0
    order = list(range(n))
    random.Random(f"dpsynth-split-{seed}").shuffle(order)
    test_idx = set(order[:n_test])
    train = [u for i, u in enumerate(units) if i not in test_idx]
    test = [u for i, u in enumerate(units) if i in test_idx]
    return train, test
