"""Generic data as a new user brings it: a rating-like code not named ``rating``, a title, empty secondary codes, and
``max_records`` on a sorted file (issue 9)."""

from __future__ import annotations

import logging

import pytest

from dpsynth.data.config import DataConfig, FieldMap
from dpsynth.data.prepare import load_prepare_info, prepare_data, read_source
from dpsynth.data.records import CodeSpec, read_records
from dpsynth.data.roles import code_roles, positions, resolve_label, roles_from_info
from dpsynth.data.schema_build import build_schema
from dpsynth.data.schemas import INCOMPLETE
from dpsynth.errors import ConfigError
from dpsynth.rundir import RunDir
from tests.data.files import write_csv

GENRES = ["fiction", "poetry", "travel"]


def _rows(n: int = 40) -> list[dict]:
    return [
        {
            "body": f"Review number {i} of this book, which was rather good in parts.",
            "who": f"user{i}",
            "stars": 1 + i % 5,
            "genre": GENRES[i % 3] if i % 4 else "",  # every fourth row has no genre
            "headline": f"Headline {i}",
            "pos": i,
        }
        for i in range(n)
    ]


def _cfg(path, **kw) -> DataConfig:
    base = dict(
        path=path,
        schema="generic",
        fields=FieldMap(
            text="body", user="who", title="headline", item="pos", codes={"stars": "stars", "genre": "genre"}
        ),
        code_domains={"stars": [1, 2, 3, 4, 5], "genre": GENRES},
        privacy_unit="record",
    )
    base.update(kw)
    return DataConfig(**base)


def test_a_rating_like_code_of_another_name_is_the_ordinal_label(tmp_path):
    path = write_csv(tmp_path / "b.csv", _rows())
    info = prepare_data(_cfg(path, missing_code_value="unknown"), RunDir(tmp_path / "run"))
    assert info["label"] == "stars"
    assert info["code_roles"] == {"stars": "ordinal", "genre": "nominal"}


def test_the_config_names_the_label_and_the_roles(tmp_path):
    path = write_csv(tmp_path / "b.csv", _rows())
    cfg = _cfg(path, label="genre", code_roles={"genre": "ordinal", "stars": "nominal"}, missing_code_value="unknown")
    info = prepare_data(cfg, RunDir(tmp_path / "run"))
    assert info["label"] == "genre" and info["code_roles"] == {"stars": "nominal", "genre": "ordinal"}
    assert load_prepare_info(RunDir(tmp_path / "run"))["label"] == "genre"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"label": "rating"}, r"data\.label is 'rating', not a control code.*codes: stars, genre"),
        ({"code_roles": {"star": "ordinal"}}, r"data\.code_roles names star, not a control code"),
    ],
)
def test_a_label_or_role_of_no_code_is_an_error(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        build_schema(_cfg(None, **kw), _rows(1)[0], "b.csv")


def test_label_defaults():
    stars, genre = CodeSpec("stars", (1, 2, 3, 4, 5)), CodeSpec("genre", tuple(GENRES))
    assert resolve_label([genre, stars], None, code_roles([genre, stars], {})) == "stars"
    two = [stars, CodeSpec("score", (0, 1))]
    assert resolve_label(two, None, code_roles(two, {})) is None  # two ordinal codes: ambiguous, say nothing
    assert resolve_label([*two, CodeSpec("rating", (1, 2))], None, {}) == "rating"
    assert positions(genre, "nominal") is None and positions(stars, "ordinal") == {v: float(v) for v in range(1, 6)}
    # a run prepared before roles existed: defaults from its specs
    assert roles_from_info({}, [stars, genre]) == ("stars", {"stars": "ordinal", "genre": "nominal"})


def test_an_empty_secondary_code_is_dropped_by_default_and_kept_as_unknown_when_asked(tmp_path, caplog):
    path = write_csv(tmp_path / "b.csv", _rows())
    caplog.set_level(logging.INFO, logger="dpsynth.data.prepare")
    dropped = prepare_data(_cfg(path), RunDir(tmp_path / "a"))
    assert dropped["counts"]["dropped"] == {INCOMPLETE: 10}
    assert "set data.missing_code_value" in caplog.text

    run = RunDir(tmp_path / "b")
    kept = prepare_data(_cfg(path, missing_code_value="unknown"), run)
    assert kept["counts"]["dropped"] == {} and kept["counts"]["kept"] == 40
    assert kept["counts"]["missing_code_filled"] == {"genre": 10}
    specs = {s["name"]: s["values"] for s in kept["code_specs"]}
    assert specs == {"stars": [1, 2, 3, 4, 5], "genre": [*GENRES, "unknown"]}  # public: from the config only
    genres = [r.codes["genre"] for r in read_records(run.train) + read_records(run.test)]
    assert genres.count("unknown") == 10


def test_an_empty_label_is_still_dropped(tmp_path):
    rows = _rows(10)
    rows[3]["stars"] = ""
    path = write_csv(tmp_path / "b.csv", rows)
    info = prepare_data(_cfg(path, missing_code_value="unknown"), RunDir(tmp_path / "run"))
    assert info["counts"]["dropped"] == {INCOMPLETE: 1}  # the label is what is evaluated: never invented


def test_a_mapped_title_that_is_not_used_is_announced(tmp_path, caplog):
    path = write_csv(tmp_path / "b.csv", _rows(12))
    caplog.set_level(logging.INFO, logger="dpsynth.data.prepare")
    prepare_data(_cfg(path, missing_code_value="unknown"), RunDir(tmp_path / "a"))
    assert "12 usable records have a title (column 'headline'), which is not used" in caplog.text
    caplog.clear()
    prepare_data(_cfg(path, missing_code_value="unknown", include_title=True), RunDir(tmp_path / "b"))
    assert "which is not used" not in caplog.text


def _positions(cfg: DataConfig) -> list[int]:
    return [int(r.item) for r in read_source(cfg).kept]


def test_max_records_is_a_seeded_random_sample_by_default(tmp_path):
    path = write_csv(tmp_path / "b.csv", _rows(200))
    cfg = _cfg(path, missing_code_value="unknown", max_records=20)
    assert cfg.sample == "random"
    picked = _positions(cfg)
    assert len(picked) == 20 and picked == sorted(picked)  # file order kept
    assert max(picked) > 100  # not the head of the file
    assert _positions(cfg) == picked  # seeded
    assert _positions(cfg.model_copy(update={"seed": 1})) != picked
    assert _positions(cfg.model_copy(update={"sample": "first"})) == list(range(20))
    info = prepare_data(cfg, RunDir(tmp_path / "run"))
    assert info["sample"] == "random" and info["counts"]["dropped"] == {"beyond_max_records": 180}


def test_the_random_sample_depends_on_positions_not_on_content(tmp_path):
    rows = _rows(200)
    other = [dict(r, body=f"Completely different words, row {r['pos']}, for the same position.") for r in rows]
    a = _positions(_cfg(write_csv(tmp_path / "a.csv", rows), missing_code_value="unknown", max_records=15))
    b = _positions(_cfg(write_csv(tmp_path / "b.csv", other), missing_code_value="unknown", max_records=15))
    assert a == b


def test_the_random_sample_is_uniform_over_positions(tmp_path):
    """Each position is kept with probability k/n: over 200 seeds, every decile of the file is hit about as often."""
    path = write_csv(tmp_path / "b.csv", _rows(100))
    counts = [0] * 10
    cfg = _cfg(path, missing_code_value="unknown", max_records=10)
    for seed in range(200):
        for p in _positions(cfg.model_copy(update={"seed": seed})):
            counts[p // 10] += 1
    assert sum(counts) == 2000
    assert all(140 < c < 260 for c in counts), counts  # expected 200 per decile


def test_the_readme_example_is_a_valid_config_with_the_documented_meaning(tmp_path):
    import re
    from pathlib import Path

    import yaml

    from dpsynth.config import Config

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "code_domains" in b]
    cfg = Config.model_validate(yaml.safe_load(block)).data
    assert cfg.code_domains == {"stars": [1, 2, 3, 4, 5], "genre": ["fiction", "poetry", "travel"]}
    assert (cfg.label, cfg.code_roles, cfg.missing_code_value) == ("stars", {"stars": "ordinal"}, "unknown")
    assert cfg.fields.codes == {"stars": "score", "genre": "kind"} and cfg.include_title
