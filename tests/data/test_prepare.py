"""The prepare stage end to end on small constructed files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from dpsynth.data.config import DataConfig
from dpsynth.data.prepare import load_code_specs, load_prepare_info, prepare_data, read_source
from dpsynth.data.records import read_records
from dpsynth.errors import InputError
from dpsynth.rundir import RunDir, read_jsonl
from tests.data.files import review_2014, write_csv, write_jsonl, write_parquet

PLANTED = "ZQXJ-PLANTED-7731"  # a string that must never leave train/test/canaries


def _rows(n_users=30, per_user=3):
    rows = []
    for u in range(n_users):
        for k in range(per_user):
            i = u * per_user + k
            rows.append(review_2014(i, user=f"USER{u}", rating=1 + i % 5, category="Electronics"))
    return rows


def _run(tmp_path, name="run"):
    return RunDir(tmp_path / name)


def test_outputs_and_counts(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", _rows())
    run = _run(tmp_path)
    info = prepare_data(DataConfig(path=path, max_records_per_user=2, seed=1), run)
    assert info == load_prepare_info(run)
    c = info["counts"]
    assert (c["rows"], c["read"], c["kept"]) == (90, 90, 60)
    assert c["dropped"] == {"over_user_bound": 30}
    assert c["read"] == c["kept"] + sum(c["dropped"].values())
    assert c["train_units"] + c["test_units"] == 30 and c["test_units"] == 6
    train, test = read_records(run.train), read_records(run.test)
    assert (len(train), len(test)) == (c["train_records"], c["test_records"])
    assert Counter(Counter(r.unit for r in train + test).values()) == {2: 30}
    assert not {r.unit for r in train} & {r.unit for r in test}
    assert all(r.unit.startswith("u") and "USER" not in r.unit for r in train + test)
    assert info["source"]["schema"] == "amazon2014" and info["source"]["format"] == "jsonl"
    assert [s.name for s in load_code_specs(run)] == ["rating", "category"]
    assert info["privacy_unit"] == "user" and info["max_records_per_user"] == 2
    assert not run.canaries.exists()


def test_csv_gz_with_html_and_duplicates(tmp_path):
    rows = _rows(n_users=10, per_user=1)
    rows[1]["reviewText"] = "Works&nbsp;great<br />with my <b>phone</b>, no complaints at all."
    rows[2]["reviewText"] = rows[1]["reviewText"]  # exact duplicate of another user's text
    rows[3]["reviewText"] = "works GREAT with my phone -- no complaints at all!"  # normalized duplicate
    rows[4]["reviewText"] = "Too short"
    rows[5]["overall"] = ""
    path = write_csv(tmp_path / "r.csv.gz", rows)
    run = _run(tmp_path)
    info = prepare_data(DataConfig(path=path, privacy_unit="record"), run)
    assert info["counts"]["dropped"] == {"duplicate": 1, "near_duplicate": 1, "too_short": 1, "incomplete": 1}
    texts = {r.text for r in read_records(run.train) + read_records(run.test)}
    assert "Works great with my phone, no complaints at all." in texts
    assert not any("<" in t or "&" in t for t in texts)


def test_max_records_takes_the_first_usable(tmp_path):
    rows = _rows(n_users=20, per_user=1)
    rows[0]["reviewText"] = "short"  # unusable: does not count towards max_records
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    run = _run(tmp_path)
    info = prepare_data(DataConfig(path=path, max_records=5, privacy_unit="record", sample="first"), run)
    items = sorted(r.item for r in read_records(run.train) + read_records(run.test))
    assert items == [f"B{i:05d}" for i in range(1, 6)]
    assert info["counts"]["dropped"] == {"too_short": 1, "beyond_max_records": 14}
    # the fingerprint describes the whole source, not the part a run used
    full = prepare_data(DataConfig(path=path, privacy_unit="record"), _run(tmp_path, "full"))
    assert full["source"]["fingerprint"] == info["source"]["fingerprint"]


def test_records_without_user_are_dropped_for_user_units(tmp_path):
    rows = _rows(n_users=6, per_user=1)
    rows[2]["reviewerID"] = ""
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    info = prepare_data(DataConfig(path=path), _run(tmp_path))
    assert info["counts"]["dropped"] == {"no_user": 1}
    record_level = prepare_data(DataConfig(path=path, privacy_unit="record"), _run(tmp_path, "rec"))
    assert record_level["counts"]["dropped"] == {}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_units_never_in_both_splits_and_canaries_only_in_train(tmp_path, seed):
    path = write_jsonl(tmp_path / "r.jsonl", _rows(n_users=40, per_user=2))
    run = _run(tmp_path)
    info = prepare_data(DataConfig(path=path, max_records_per_user=2, seed=seed, canary_rate=0.1), run)
    train, test = read_records(run.train), read_records(run.test)
    assert not {r.unit for r in train} & {r.unit for r in test}
    canaries = read_jsonl(run.canaries)
    assert len(canaries) == info["counts"]["canaries"] == round(0.1 * info["counts"]["train_units"])
    canary_units = {c["unit"] for c in canaries}
    assert canary_units <= {r.unit for r in train}
    assert not canary_units & {r.unit for r in test}
    assert not any(c["secret"] in r.text for c in canaries for r in test)
    for c in canaries:
        assert {"unit", "name", "street", "phone", "secret", "text", "codes"} <= set(c)
        (rec,) = [r for r in train if r.unit == c["unit"]]  # its own unit, one record
        assert rec.text == c["text"] and dict(rec.codes) == c["codes"]
    # canaries are mixed in, not appended
    positions = [i for i, r in enumerate(train) if r.unit in canary_units]
    assert positions != list(range(len(train) - len(canaries), len(train)))


def test_fingerprint_order_independent_and_content_sensitive(tmp_path):
    rows = _rows(n_users=8, per_user=1)

    def fingerprint(rs, name):
        return read_source(DataConfig(path=write_jsonl(tmp_path / name, rs))).fingerprint.hexdigest()

    base = fingerprint(rows, "a.jsonl")
    assert fingerprint(list(reversed(rows)), "b.jsonl") == base
    changed = [dict(r) for r in rows]
    changed[3]["reviewText"] += " And one more sentence."
    assert fingerprint(changed, "c.jsonl") != base
    assert fingerprint(rows[:-1], "d.jsonl") != base


def test_no_record_text_outside_the_record_files(tmp_path):
    rows = _rows(n_users=12, per_user=2)
    rows[0]["reviewText"] = f"My neighbour {PLANTED} said this case is the best one she ever owned."
    rows[5]["summary"] = f"Title with {PLANTED}"
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    run = _run(tmp_path)
    prepare_data(DataConfig(path=path, max_records_per_user=2, canary_rate=0.2, include_title=True), run)
    record_files = {run.train, run.test, run.canaries}
    assert any(PLANTED in p.read_text() for p in (run.train, run.test))  # it was kept, so the check means something
    others = [p for p in run.root.rglob("*") if p.is_file() and p not in record_files]
    assert run.prepare_json in others
    for p in others:
        assert PLANTED not in p.read_text(errors="replace"), p
    assert PLANTED not in json.dumps(load_prepare_info(run))


def test_header_missing_required_field(tmp_path):
    rows = [{k: v for k, v in review_2014(i).items() if k != "reviewText"} for i in range(3)]
    path = write_csv(tmp_path / "r.csv", rows)
    with pytest.raises(InputError) as err:
        prepare_data(DataConfig(path=path), _run(tmp_path))
    assert str(err.value) == f"{path}:2: field 'reviewText': required column is missing from the header"


def test_jsonl_where_no_row_has_a_required_field(tmp_path):
    rows = [{**review_2014(i), "reviewerID": None} for i in range(3)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    with pytest.raises(InputError, match=r"r\.jsonl:1: field 'reviewerID': no record has a value"):
        prepare_data(DataConfig(path=path), _run(tmp_path))
    # at record level the user id is not needed
    prepare_data(DataConfig(path=path, privacy_unit="record"), _run(tmp_path, "ok"))


def test_empty_file_and_no_usable_records(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match=r"empty\.jsonl: contains no records"):
        prepare_data(DataConfig(path=empty), _run(tmp_path))
    header_only = tmp_path / "h.csv"
    header_only.write_text("reviewerID,asin,reviewText,overall\n")
    with pytest.raises(InputError, match="contains no records"):
        prepare_data(DataConfig(path=header_only), _run(tmp_path))
    short = write_jsonl(tmp_path / "s.jsonl", [review_2014(i, text=f"meh {i}") for i in range(4)])
    with pytest.raises(InputError, match=r"s\.jsonl: no usable records: read 4 .*dropped: too_short 4"):
        prepare_data(DataConfig(path=short), _run(tmp_path))


def test_nothing_written_on_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(review_2014(1)) + "\n{broken\n")
    run = _run(tmp_path)
    with pytest.raises(InputError, match=r"r\.jsonl:2: not valid JSON"):
        prepare_data(DataConfig(path=path), run)
    assert not run.root.exists() or not any(run.root.rglob("*"))


def test_rerun_replaces_outputs_and_removes_stale_canaries(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", _rows(n_users=20, per_user=1))
    run = _run(tmp_path)
    prepare_data(DataConfig(path=path, canary_rate=0.1), run)
    assert run.canaries.exists()
    prepare_data(DataConfig(path=path), run)
    assert not run.canaries.exists()
    assert not [p for p in run.data_dir.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_builtin_demo(tmp_path):
    run = _run(tmp_path)
    info = prepare_data(DataConfig(demo_records=120, seed=5), run)
    assert info["source"]["path"] == "builtin:demo" and info["source"]["schema"] == "generic"
    assert [s.to_json() for s in load_code_specs(run)][1]["values"][0] == "Cell_Phones_and_Accessories"
    assert info["counts"]["train_units"] > 30
    again = prepare_data(DataConfig(demo_records=120, seed=5), _run(tmp_path, "again"))
    assert again["source"]["fingerprint"] == info["source"]["fingerprint"]
    assert [r.text for r in read_records(run.train)] == [r.text for r in read_records(_run(tmp_path, "again").train)]


def test_missing_prepare_json(tmp_path):
    with pytest.raises(InputError, match="run `dpsynth prepare` first"):
        load_code_specs(_run(tmp_path))


def test_parquet_generic_schema(tmp_path):
    rows = [
        {"body": f"Generic review number {i}, long enough to keep.", "who": f"p{i % 7}", "stars": 1 + i % 3}
        for i in range(30)
    ]
    path = write_parquet(tmp_path / "r.parquet", rows)
    cfg = DataConfig(
        path=path,
        schema="generic",
        fields={"text": "body", "user": "who", "codes": {"stars": "stars"}},
        code_domains={"stars": [1, 2, 3]},
        max_records_per_user=10,
    )
    info = prepare_data(cfg, _run(tmp_path))
    assert info["source"]["format"] == "parquet"
    assert info["code_specs"] == [{"name": "stars", "values": [1, 2, 3]}]
    assert info["counts"]["kept"] == 30 and info["counts"]["train_units"] + info["counts"]["test_units"] == 7
