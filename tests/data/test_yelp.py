"""The built-in ``yelp`` schema (Yue et al. 2023's benchmark files) and a separate test file (``data.test_path``)."""

from __future__ import annotations

import pytest

from dpsynth.data.categories import YELP_CATEGORIES
from dpsynth.data.config import DataConfig
from dpsynth.data.prepare import load_code_specs, prepare_data
from dpsynth.data.records import read_records
from dpsynth.errors import ConfigError
from dpsynth.rundir import RunDir
from tests.data.files import write_csv


def _yelp_rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [
        {
            "text": f"Review number {offset + i}: the place was fine and the staff were friendly enough to return.",
            "label1": f"Business Category: {YELP_CATEGORIES[i % len(YELP_CATEGORIES)]}",
            "label2": f"Review Stars: {1 + i % 5}.0",
        }
        for i in range(n)
    ]


def test_yelp_detected_codes_parsed_and_separate_test_file(tmp_path):
    dev = write_csv(tmp_path / "dev.csv.gz", _yelp_rows(40))
    test = write_csv(tmp_path / "test.csv.gz", _yelp_rows(30, offset=1000))
    run = RunDir(tmp_path / "run")
    info = prepare_data(
        DataConfig(path=dev, test_path=test, privacy_unit="record", max_records=25, max_test_records=12), run
    )
    assert info["source"]["schema"] == "yelp"
    assert info["test_source"] == str(test)
    c = info["counts"]
    # every usable private record is for training (no split of the private file), the test file gives the test split
    assert (c["train_records"], c["test_records"]) == (25, 12)
    specs = {s.name: s.values for s in load_code_specs(run)}
    assert specs == {"category": YELP_CATEGORIES, "rating": (1, 2, 3, 4, 5)}
    train, tests = read_records(run.train), read_records(run.test)
    assert train[0].codes == {"category": YELP_CATEGORIES[0], "rating": 1}
    assert tests[3].codes == {"category": YELP_CATEGORIES[3], "rating": 4}
    assert all("Review number 1" in r.text for r in tests)  # test records come from the test file only
    assert not {r.text for r in train} & {r.text for r in tests}


def test_yelp_out_of_domain_values_are_dropped(tmp_path):
    rows = _yelp_rows(10)
    rows[0]["label2"] = "Review Stars: 4.5"
    rows[1]["label1"] = "Business Category: Casinos"
    path = write_csv(tmp_path / "dev.csv", rows)
    info = prepare_data(DataConfig(path=path, privacy_unit="record"), RunDir(tmp_path / "run"))
    assert info["counts"]["dropped"] == {"code_out_of_domain": 2}


def test_yelp_needs_record_level_units(tmp_path):
    path = write_csv(tmp_path / "dev.csv", _yelp_rows(10))
    with pytest.raises(ConfigError, match="privacy_unit=record"):
        prepare_data(DataConfig(path=path), RunDir(tmp_path / "run"))
