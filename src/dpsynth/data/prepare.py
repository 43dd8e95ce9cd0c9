"""The ``prepare`` stage: private source file -> cleaned, bounded, split records in the run directory.

``read -> map (schema) -> clean -> drop duplicates -> N usable -> privacy units -> bound -> split -> canaries``

``data.max_records`` keeps N usable records: by default a uniform random sample (reservoir sampling seeded by
``data.seed``, drawing on record *positions* only, never on their content), or with ``data.sample=first`` the first N
in file order. Random is the default because files are often sorted (by product, by date), so that their first rows
are a biased slice; both read the whole file anyway, for the fingerprint.

Every output is written only after everything succeeded, each file atomically, and ``prepare.json`` last (it is what
later stages check for), so an error leaves no half-prepared run. ``prepare.json`` holds parameters, counts and the
source fingerprint, never record text; like everything computed from the data without noise, its counts are not DP
and belong to the run's owner, not to a published report.

Caveat, stated so nobody overlooks it: the DP guarantee of training is with respect to the prepared training set.
Steps here that look across units (global deduplication, ``max_records`` and its sample, the split) are treated, as
is usual, as the definition of that set; per-user bounding depends only on each user's own records.

>>> import tempfile
>>> from pathlib import Path
>>> run = RunDir(Path(tempfile.mkdtemp()))
>>> info = prepare_data(DataConfig(demo_records=60, privacy_unit="record"), run)
>>> info["source"]["path"], info["counts"]["train_units"] + info["counts"]["test_units"] == info["counts"]["kept"]
('builtin:demo', True)
>>> [s.name for s in load_code_specs(run)]
['rating', 'category']
>>> import shutil; shutil.rmtree(run.root)
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

from dpsynth.data.canaries import Canary, canary_count, make_canaries, write_canaries
from dpsynth.data.clean import Cleaner, clean_record
from dpsynth.data.config import DataConfig, FieldMap
from dpsynth.data.demo import DEMO_CODE_DOMAINS, DEMO_FIELDS, demo_records
from dpsynth.data.fingerprint import Fingerprint
from dpsynth.data.format import CutRule
from dpsynth.data.readers import inspect_file, iter_rows
from dpsynth.data.records import CodeSpec, Record, write_records
from dpsynth.data.schema_build import build_schema
from dpsynth.data.schemas import RawRecord, Schema
from dpsynth.data.units import OVER_USER_BOUND, build_units, split_units
from dpsynth.errors import InputError
from dpsynth.rundir import RunDir, not_dp_privacy_json, read_json, write_json

log = logging.getLogger(__name__)

NO_USER = "no_user"
BEYOND_MAX_RECORDS = "beyond_max_records"
DEMO_SOURCE = "builtin:demo"
T = TypeVar("T")


class SourceRead:
    """What one pass over the source gave: the usable records in file order, drop counts and the fingerprint."""

    def __init__(self, label: str, fmt: str, schema: Schema) -> None:
        self.label, self.format, self.schema = label, fmt, schema
        self.kept: list[RawRecord] = []
        self.dropped: Counter[str] = Counter()
        self.rows = 0
        self.read = 0
        self.titled = 0  # usable records with a title (a notice says when they go unused)
        self.filled: Counter[str] = Counter()  # kept records whose empty code took data.missing_code_value
        self.fingerprint = Fingerprint()


def _open(cfg: DataConfig) -> tuple[str, str, DataConfig, Iterator[tuple[int, dict[str, Any]]]]:
    """(source label, format, effective config, rows). No path: the built-in demo set in the generic schema."""
    if cfg.path is None:
        demo_cfg = cfg.model_copy(
            update={
                "schema_": "generic",
                "fields": FieldMap(**DEMO_FIELDS),
                "code_domains": DEMO_CODE_DOMAINS,
                "meta_path": None,
            }
        )
        return DEMO_SOURCE, "builtin", demo_cfg, enumerate(demo_records(cfg.demo_records, cfg.seed), start=1)
    src = inspect_file(cfg.path, cfg.format)
    return str(cfg.path), src.format, cfg, iter_rows(src)


def read_source(cfg: DataConfig) -> SourceRead:
    """Read the whole source once: map, clean, deduplicate and keep ``max_records`` usable records (a seeded random
    sample or the first ones, ``data.sample``), in file order.

    The whole file is read even when ``max_records`` is reached, so that the fingerprint (and the drop counts)
    describe the source, not the part of it a run used.
    """
    label, fmt, eff, rows = _open(cfg)
    first = next(rows, None)
    if first is None:
        raise InputError("contains no records", path=label)
    first_line, first_row = first
    schema = build_schema(eff, first_row, label)
    if fmt in ("csv", "parquet"):
        schema.check_columns(list(first_row), label, first_line)
    out = SourceRead(label, fmt, schema)
    cleaner = Cleaner(min_chars=cfg.min_chars, max_chars=cfg.max_chars, dedup=cfg.dedup)
    need_user = cfg.privacy_unit == "user"
    reservoir = (
        _Reservoir(cfg.max_records, cfg.seed) if cfg.max_records is not None and cfg.sample == "random" else None
    )
    for line, row in itertools.chain([first], rows):
        out.rows += 1
        for rec in schema.map(row, line):
            out.read += 1
            clean_record(rec)
            if rec.text is not None:
                out.fingerprint.add(rec.text)
            reason = rec.drop
            if (
                reason is None
                and reservoir is None
                and cfg.max_records is not None
                and len(out.kept) >= cfg.max_records
            ):
                reason = BEYOND_MAX_RECORDS
            if reason is None:
                reason = cleaner.check(rec)
            if reason is None and need_user and rec.user is None:
                reason = NO_USER
            if reason is not None:
                out.dropped[reason] += 1
                continue
            cleaner.remember(rec)
            if reservoir is None:
                out.kept.append(rec)
            elif not reservoir.offer(rec):
                out.dropped[BEYOND_MAX_RECORDS] += 1
    if reservoir is not None:
        out.kept = reservoir.records()
    out.titled = sum(rec.title is not None for rec in out.kept)
    out.filled = Counter(name for rec in out.kept for name in rec.filled)
    missing = schema.missing_fields()
    if missing:
        raise InputError(
            f"no record has a value for this required field (first record at line {first_line})",
            path=label,
            line=first_line,
            field=missing[0],
        )
    return out


class _Reservoir:
    """A uniform random sample of ``k`` records from a stream (Algorithm R), seeded: which positions are kept depends
    only on the seed and the number of records offered, never on their content."""

    def __init__(self, k: int, seed: int) -> None:
        self.k, self.seen = k, 0
        self.rng = random.Random(f"dpsynth-sample-{seed}")
        self.kept: list[tuple[int, RawRecord]] = []

    def offer(self, rec: RawRecord) -> bool:
        """Offer the next record; False when one record (this one or an earlier one) leaves the sample."""
        i, self.seen = self.seen, self.seen + 1
        if len(self.kept) < self.k:
            self.kept.append((i, rec))
            return True
        j = self.rng.randint(0, i)
        if j < self.k:
            self.kept[j] = (i, rec)
        return False

    def records(self) -> list[RawRecord]:
        """The sample in file order."""
        return [rec for _, rec in sorted(self.kept, key=lambda x: x[0])]


def _insert_seeded(items: Sequence[T], extra: Sequence[T], seed: int) -> list[T]:
    """``items`` with each of ``extra`` inserted at a seeded random position."""
    rng = random.Random(f"dpsynth-canary-positions-{seed}")
    out = list(items)
    for x in extra:
        out.insert(rng.randint(0, len(out)), x)
    return out


def _summary(counts: Counter[str]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "nothing"


def prepare_data(cfg: DataConfig, run: RunDir) -> dict[str, Any]:
    """Prepare ``run``'s data directory from ``cfg``; returns what it writes to ``prepare.json``."""
    src = read_source(cfg)
    if not src.kept:
        raise InputError(
            f"no usable records: read {src.read} (in {src.rows} rows), dropped: {_summary(src.dropped)}", path=src.label
        )
    units, over_bound = build_units(
        src.kept, privacy_unit=cfg.privacy_unit, max_records_per_user=cfg.max_records_per_user, seed=cfg.seed
    )
    dropped = Counter(src.dropped)
    if over_bound:
        dropped[OVER_USER_BOUND] += over_bound
    if cfg.test_path is None:
        train, test = split_units(units, test_fraction=cfg.test_fraction, seed=cfg.seed)
    else:
        train, test = units, _separate_test_units(cfg)
    code_specs = src.schema.code_specs
    canaries: list[Canary] = make_canaries(canary_count(cfg.canary_rate, len(train)), cfg.seed, code_specs)
    train_out = _insert_seeded(train, [[c.record()] for c in canaries], cfg.seed)
    kept = sum(len(u) for u in units)
    info: dict[str, Any] = {
        "source": {
            "path": src.label,
            "schema": src.schema.name,
            "format": src.format,
            "fingerprint": src.fingerprint.hexdigest(),
            "meta_path": None if cfg.meta_path is None or cfg.path is None else str(cfg.meta_path),
        },
        "privacy_unit": cfg.privacy_unit,
        "max_records_per_user": cfg.max_records_per_user if cfg.privacy_unit == "user" else 1,
        "max_records": cfg.max_records,
        "sample": cfg.sample,
        "max_tokens": cfg.max_tokens,
        "cut_responses": cfg.cut_responses,
        "min_chars": cfg.min_chars,
        "max_chars": cfg.max_chars,
        "dedup": cfg.dedup,
        "seed": cfg.seed,
        "test_fraction": cfg.test_fraction,
        "canary_rate": cfg.canary_rate,
        "counts": {
            "rows": src.rows,
            "read": src.read,
            "kept": kept,
            "dropped": dict(sorted(dropped.items())),
            "train_records": sum(len(u) for u in train),
            "train_units": len(train),
            "test_records": sum(len(u) for u in test),
            "test_units": len(test),
            "canaries": len(canaries),
            "missing_code_filled": dict(sorted(src.filled.items())),
        },
        "test_source": None if cfg.test_path is None else str(cfg.test_path),
        "code_specs": [s.to_json() for s in code_specs],
        "label": src.schema.label,
        "code_roles": src.schema.roles,
        "missing_code_value": cfg.missing_code_value,
        "include_title": cfg.include_title,
        "system_prompt": cfg.system_prompt,
    }
    _write(run, train_out, test, canaries, info)
    log.info(
        "prepared %d train units (+%d canaries), %d test units from %s; dropped: %s",
        len(train),
        len(canaries),
        len(test),
        src.label,
        _summary(dropped),
    )
    _notices(cfg, src, dropped)
    return info


def _notices(cfg: DataConfig, src: SourceRead, dropped: Counter[str]) -> None:
    """Say what the user may not expect: titles read but unused, empty codes dropped or filled (counts only)."""
    if src.titled and not cfg.include_title:
        log.info(
            "notice: %d usable records have a title (column %r), which is not used: data.include_title is false, "
            "so titles are neither trained on nor generated; set data.include_title=true to use them",
            src.titled,
            src.schema.title,
        )
    if dropped.get("incomplete") and cfg.missing_code_value is None and src.schema.codes:
        log.info(
            "notice: %d records were dropped as incomplete (an empty text or control code); to keep records whose "
            "code other than the label is empty, set data.missing_code_value (e.g. unknown)",
            dropped["incomplete"],
        )
    for name, n in sorted(src.filled.items()):
        log.info("%d kept records had an empty %s: given %r (data.missing_code_value)", n, name, cfg.missing_code_value)


def _separate_test_units(cfg: DataConfig) -> list[list[Record]]:
    """The test split read from ``data.test_path`` (same schema and cleaning, its own cap ``max_test_records``).

    Each test record is its own unit: the test split is never trained on, so how its records group into people
    only matters for not splitting a person across train and test, which a separate file already guarantees.
    """
    assert cfg.test_path is not None
    test_cfg = cfg.model_copy(update={"path": cfg.test_path, "max_records": cfg.max_test_records, "sample": "first"})
    src = read_source(test_cfg)
    if not src.kept:
        raise InputError(f"no usable test records, dropped: {_summary(src.dropped)}", path=src.label)
    units, _ = build_units(src.kept, privacy_unit="record", max_records_per_user=1, seed=cfg.seed)
    return units


def _write(
    run: RunDir, train: list[list[Record]], test: list[list[Record]], canaries: list[Canary], info: dict[str, Any]
) -> None:
    """Write every output; ``prepare.json`` is removed first and written last, so it marks a complete preparation."""
    run.data_dir.mkdir(parents=True, exist_ok=True)
    run.prepare_json.unlink(missing_ok=True)
    write_records(run.train, itertools.chain.from_iterable(train))
    write_records(run.test, itertools.chain.from_iterable(test))
    if canaries:
        write_canaries(run.canaries, canaries)
    else:
        run.canaries.unlink(missing_ok=True)  # a stale file would make evaluation look for canaries never trained on
    not_dp_privacy_json(
        run.data_privacy_json,
        "the private records themselves (cleaned, bounded, split) and any planted canaries: never release them; "
        "prepare.json's counts are exact, not DP",
        source=info["source"]["fingerprint"],
        privacy_unit=info["privacy_unit"],
    )
    write_json(run.prepare_json, info)


def load_prepare_info(run: RunDir) -> dict[str, Any]:
    """``prepare.json`` of a run (an error telling to run ``prepare`` when there is none)."""
    if not run.prepare_json.is_file():
        raise InputError("not found; run `dpsynth prepare` first", path=run.prepare_json)
    info: dict[str, Any] = read_json(run.prepare_json)
    return info


def prepared_cut_rule(info: Mapping[str, Any]) -> CutRule:
    """How the prepared data's responses were cut for training (``prepare.json``'s ``cut_responses``): every later
    reader of those data (training, the attacks' scoring, MAUVE at the bound) must cut as training did, whatever the
    config says now. Data prepared before the key existed were cut at the token.

    >>> prepared_cut_rule({}), prepared_cut_rule({"cut_responses": "sentence"})
    ('token', 'sentence')
    """
    return cast(CutRule, info.get("cut_responses", "token"))


def generation_budget(info: Mapping[str, Any], max_new_tokens: int) -> int:
    """How many tokens generation may write: ``generate.max_new_tokens``, or the bound released for the prepared data
    when ``data.max_tokens=auto`` chose it (``prepare.json``'s ``length_release``: generation writes up to the length
    training was cut to, the pairing the public proxy chose, bench/results/recipe-search/).

    >>> generation_budget({"max_tokens": 128}, 64), generation_budget({"max_tokens": 128, "length_release": {}}, 64)
    (64, 128)
    """
    return int(info["max_tokens"]) if "length_release" in info else int(max_new_tokens)


def load_code_specs(run: RunDir) -> list[CodeSpec]:
    """The control codes and their public domains, as ``prepare`` declared them."""
    return [CodeSpec.from_json(obj) for obj in load_prepare_info(run)["code_specs"]]
