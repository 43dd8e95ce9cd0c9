"""The prepare stage on each real file type in ../shared/data (skipped, with the reason, when it is absent)."""

from __future__ import annotations

import pytest

from dpsynth.data.config import DataConfig
from dpsynth.data.format import encode_unit
from dpsynth.data.prepare import prepare_data
from dpsynth.data.records import group_by_unit, read_records
from dpsynth.rundir import RunDir

pytestmark = pytest.mark.data


def _prepare(tmp_path, path, **kw):
    run = RunDir(tmp_path / "run")
    info = prepare_data(DataConfig(path=path, max_records=200, **kw), run)
    records = read_records(run.train) + read_records(run.test)
    return info, records, run


def test_amazon_2014_category_csv(shared_data, tmp_path):
    path = shared_data / "amazon" / "categories_2014" / "Toys_and_Games.csv.gz"
    info, records, _ = _prepare(tmp_path, path)
    assert (info["source"]["schema"], info["source"]["format"]) == ("amazon2014", "csv")
    assert info["counts"]["rows"] == 5000  # the whole file is read for the fingerprint
    assert info["counts"]["kept"] + info["counts"]["dropped"].get("over_user_bound", 0) == 200
    assert {r.codes["category"] for r in records} == {"Toys_and_Games"}
    assert {r.codes["rating"] for r in records} <= {1, 2, 3, 4, 5}
    assert all(r.title for r in records[:50])


def test_amazon_2014_5core_jsonl(shared_data, tmp_path):
    path = shared_data / "amazon" / "cellphones_5core_2014.jsonl.gz"
    info, records, _ = _prepare(tmp_path, path, max_records_per_user=2)
    assert (info["source"]["schema"], info["source"]["format"]) == ("amazon2014", "jsonl")
    assert [s["name"] for s in info["code_specs"]] == ["rating"]  # no category column in this file
    assert info["counts"]["rows"] == 4776
    assert len(records) == info["counts"]["kept"] <= 200


def test_amazon_2023_nested_histories(shared_data, tmp_path, tokenizer):
    path = shared_data / "amazon" / "reviews_2023" / "validation.jsonl.gz"
    info, records, run = _prepare(tmp_path, path, max_records_per_user=3)
    assert info["source"]["schema"] == "amazon2023"
    assert info["counts"]["read"] > info["counts"]["rows"]  # histories exploded into several reviews
    assert {r.codes["category"] for r in records} <= set(info["code_specs"][1]["values"])
    units = group_by_unit(read_records(run.train))
    assert max(len(rs) for rs in units.values()) <= 3
    assert any(len(rs) > 1 for rs in units.values())
    multi = next(rs for rs in units.values() if len(rs) > 1)
    ex = encode_unit(tokenizer, multi, system_prompt=info["system_prompt"], max_tokens=info["max_tokens"])
    assert len(ex.input_ids) == len(ex.labels) and any(lab != -100 for lab in ex.labels)
