"""Schemas: mapping rows to raw records, public code domains, drops, detection, and required-field errors."""

from __future__ import annotations

import pytest

from dpsynth.data.categories import (
    AMAZON_2014_CATEGORIES,
    AMAZON_2023_CATEGORIES,
    DomainLookup,
    canonical_2023_category,
)
from dpsynth.data.config import DataConfig, FieldMap
from dpsynth.data.schema_build import build_schema
from dpsynth.data.schemas import INCOMPLETE, NO_METADATA, OUT_OF_DOMAIN
from dpsynth.errors import ConfigError, InputError
from tests.data.files import review_2014, write_jsonl


def _map_one(cfg, row):
    schema = build_schema(cfg, row, "f.jsonl")
    (rec,) = schema.map(row, 7)
    return schema, rec


def test_public_category_lists():
    assert len(AMAZON_2014_CATEGORIES) == 24 and len(set(AMAZON_2014_CATEGORIES)) == 24
    assert len(AMAZON_2023_CATEGORIES) == 34  # 33 named categories and "Unknown"
    assert {"Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Toys_and_Games"} <= set(
        AMAZON_2014_CATEGORIES
    )


def test_2023_display_names_map_to_release_names():
    # spellings seen in the 2023 metadata (main_category) of the shared data
    seen = {
        "All Beauty": "All_Beauty",
        "AMAZON FASHION": "Amazon_Fashion",
        "Arts, Crafts & Sewing": "Arts_Crafts_and_Sewing",
        "Tools & Home Improvement": "Tools_and_Home_Improvement",
        "Health & Personal Care": "Health_and_Personal_Care",
        "Buy a Kindle": "Kindle_Store",
        "All Electronics": "Electronics",
        "Amazon Home": "Home_and_Kitchen",
        "Movies & TV": "Movies_and_TV",
        "Grocery": "Grocery_and_Gourmet_Food",
    }
    assert {k: canonical_2023_category(k) for k in seen} == seen
    assert canonical_2023_category("Totally Made Up") is None


def test_domain_lookup_types():
    lookup = DomainLookup([1, 2, 3, 4, 5])
    raw = (5, 5.0, "5", " 4.0 ", 4.5, 6, 0, True, None, "five")
    expected = (5, 5, 5, 4, None, None, None, None, None, None)
    assert tuple(lookup(v) for v in raw) == expected
    cats = DomainLookup(["Toys_and_Games"])
    assert cats("Toys & Games") == "Toys_and_Games" and cats("Books") is None


def test_amazon2014_row():
    row = review_2014(1, rating=4.0, category="Toys_and_Games")
    schema, rec = _map_one(DataConfig(), row)
    assert schema.name == "amazon2014"
    assert [(s.name, len(s.values)) for s in schema.code_specs] == [("rating", 5), ("category", 24)]
    assert rec.codes == {"rating": 4, "category": "Toys_and_Games"}
    assert isinstance(rec.codes["rating"], int)
    assert (rec.line, rec.user, rec.item, rec.title, rec.drop) == (7, "U1", "B00001", "Title 1", None)


def test_amazon2014_without_category_column_has_only_rating():
    schema, rec = _map_one(DataConfig(), review_2014(1))
    assert [s.name for s in schema.code_specs] == ["rating"]
    assert rec.codes == {"rating": 4}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"overall": 3.5}, OUT_OF_DOMAIN),
        ({"overall": 0}, OUT_OF_DOMAIN),
        ({"category": "Garden_Gnomes"}, OUT_OF_DOMAIN),
        ({"overall": None}, INCOMPLETE),
        ({"reviewText": "   "}, INCOMPLETE),
        ({"reviewText": None, "overall": 9}, INCOMPLETE),
        ({"category": ""}, INCOMPLETE),
    ],
)
def test_drop_reasons(change, reason):
    _, rec = _map_one(DataConfig(), {**review_2014(1, category="Electronics"), **change})
    assert rec.drop == reason


def test_config_can_narrow_a_builtin_domain():
    cfg = DataConfig(code_domains={"category": ["Electronics", "Toys_and_Games"]})
    schema = build_schema(cfg, review_2014(1, category="Books"), "f")
    assert schema.code_specs[1].values == ("Electronics", "Toys_and_Games")
    assert schema.map(review_2014(1, category="Books"), 1)[0].drop == OUT_OF_DOMAIN
    assert schema.map(review_2014(1, category="Electronics"), 1)[0].drop is None


def test_amazon2023_nested_history_is_exploded():
    row = {
        "user_id": "AE3K",
        "category": "All_Beauty",
        "history": [
            {
                "parent_asin": "B1",
                "rating": 4.0,
                "review_title": "Pretty",
                "review_full": "A pretty bow, but overpriced for one.",
                "product": {"main_category": "All Beauty"},
            },
            {"parent_asin": "B2", "rating": 2.0, "review_title": "", "review_full": "Creased wings on arrival."},
        ],
        "heldout": {"parent_asin": "B3", "rating": 5.0, "review_full": "not used"},
    }
    schema = build_schema(DataConfig(), row, "u.jsonl")
    recs = schema.map(row, 3)
    assert schema.name == "amazon2023"
    assert [(r.text, r.codes, r.user, r.item, r.title, r.line) for r in recs] == [
        ("A pretty bow, but overpriced for one.", {"rating": 4, "category": "All_Beauty"}, "AE3K", "B1", "Pretty", 3),
        ("Creased wings on arrival.", {"rating": 2, "category": "All_Beauty"}, "AE3K", "B2", None, 3),
    ]
    assert schema.missing_fields() == []


def test_amazon2023_nested_falls_back_to_main_category():
    row = {"user_id": "u", "history": [{"rating": 5, "review_full": "Fine.", "product": {"main_category": "Grocery"}}]}
    rec = build_schema(DataConfig(), row, "f").map(row, 1)[0]
    assert rec.codes["category"] == "Grocery_and_Gourmet_Food"


def test_amazon2023_flat_with_metadata_join(tmp_path):
    meta = write_jsonl(
        tmp_path / "meta.jsonl.gz",
        [
            {"parent_asin": "P1", "main_category": "Cell Phones & Accessories", "title": "a case"},
            {"parent_asin": "P2", "main_category": None},
            {"parent_asin": "P3", "main_category": "Not A Real Category"},
        ],
    )
    cfg = DataConfig(meta_path=meta)
    base = {"text": "Solid case that fits.", "title": "Good", "rating": 5.0, "user_id": "U", "parent_asin": "P1"}
    schema = build_schema(cfg, base, "r.jsonl")
    assert schema.name == "amazon2023" and [s.name for s in schema.code_specs] == ["rating", "category"]
    got = [schema.map({**base, "parent_asin": p}, 1)[0] for p in ("P1", "P2", "P3", "P4")]
    assert got[0].codes == {"rating": 5, "category": "Cell_Phones_and_Accessories"} and got[0].drop is None
    assert got[1].codes["category"] == "Unknown"
    assert [r.drop for r in got[2:]] == [OUT_OF_DOMAIN, NO_METADATA]


def test_amazon2023_flat_without_metadata_has_only_rating():
    row = {"text": "Solid case.", "title": "Good", "rating": 5.0, "user_id": "U", "parent_asin": "P1"}
    schema = build_schema(DataConfig(), row, "r.jsonl")
    assert [s.name for s in schema.code_specs] == ["rating"]


def test_generic_schema_with_declared_domains():
    cfg = DataConfig(
        schema="generic",
        fields=FieldMap(text="body", user="who", codes={"stars": "s", "lang": "l"}),
        code_domains={"stars": [1, 2, 3], "lang": ["en", "de"]},
    )
    schema, rec = _map_one(cfg, {"body": "Very good indeed.", "who": 17, "s": "3", "l": "de"})
    assert rec.codes == {"stars": 3, "lang": "de"} and rec.user == "17"
    assert schema.map({"body": "Nope.", "who": 1, "s": 3, "l": "fr"}, 2)[0].drop == OUT_OF_DOMAIN


def test_generic_code_without_domain_is_an_error_naming_the_code():
    cfg = DataConfig(schema="generic", fields=FieldMap(user="u", codes={"stars": "s"}))
    with pytest.raises(ConfigError, match=r"'stars'.*data\.code_domains\.stars"):
        build_schema(cfg, {"text": "x", "u": "1", "s": 1}, "f")


def test_generic_user_unit_needs_user_column():
    with pytest.raises(ConfigError, match=r"data\.fields\.user"):
        build_schema(DataConfig(schema="generic"), {"text": "x"}, "f")


def test_auto_detection_failure_names_file():
    with pytest.raises(InputError, match=r"^f\.csv: cannot detect the schema.*'foo'"):
        build_schema(DataConfig(), {"foo": 1, "bar": 2}, "f.csv")


def test_required_column_missing_from_header():
    row = {"reviewerID": "U", "asin": "A", "overall": "5.0", "summary": "x"}
    schema = build_schema(DataConfig(), row, "r.csv")
    with pytest.raises(InputError) as err:
        schema.check_columns(list(row), "r.csv", 2)
    assert str(err.value) == "r.csv:2: field 'reviewText': required column is missing from the header"


def test_missing_fields_tracks_values_across_rows():
    schema = build_schema(DataConfig(), review_2014(1), "r.jsonl")
    schema.map({"reviewerID": "U", "overall": 5, "reviewText": ""}, 1)
    assert schema.missing_fields() == ["reviewText"]
    schema.map(review_2014(2), 2)
    assert schema.missing_fields() == []
