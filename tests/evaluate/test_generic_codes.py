"""The evaluate stage on generic data whose codes are not named ``rating`` and ``category`` (issue 9).

A run is prepared from the demo reviews with their codes renamed (``stars``, ``genre``), and the "generated" files are
written by hand (other fake reviews, no adapters: the model attacks are skipped), so that each test controls exactly
what the arms contain: the label's metrics, every code alike, collapsed code cells, samples with their codes and
canary-shaped personal data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dpsynth.config import Config, load_config
from dpsynth.data.demo import DEMO_CODE_DOMAINS, demo_records
from dpsynth.data.prepare import prepare_data
from dpsynth.data.records import read_records
from dpsynth.evaluate.run import evaluate_run, headline_rows
from dpsynth.rundir import RunDir, write_jsonl

DOMAINS = {"stars": DEMO_CODE_DOMAINS["rating"], "genre": DEMO_CODE_DOMAINS["category"]}
SMALL = [
    "evaluate.max_records=60",
    "evaluate.num_samples=3",
    "evaluate.mia_max_records=4",
    "evaluate.exposure_canaries=0",
]


def _cfg(model_dir: Path, source: Path, *extra: str) -> Config:
    return load_config(
        None,
        [
            f"model.name={model_dir}",
            f"data.path={source}",
            "data.schema=generic",
            "data.fields={text: text, user: user_id, codes: {stars: rating, genre: category}}",
            f"data.code_domains={json.dumps(DOMAINS)}",
            "data.privacy_unit=record",
            "data.canary_rate=0.05",
            *SMALL,
            *extra,
        ],
    )


def _write_arm(run: RunDir, arm: str, rows: list[dict[str, Any]]) -> None:
    run.generated(arm).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(run.generated(arm), [{"index": i, **r} for i, r in enumerate(rows)])


def _prepared(tmp_path: Path, model_dir: Path, *extra: str) -> tuple[Config, RunDir]:
    source = tmp_path / "books.jsonl"
    write_jsonl(source, demo_records(150, seed=5))
    cfg = _cfg(model_dir, source, *extra)
    run = RunDir(tmp_path / "run")
    prepare_data(cfg.data, run)
    return cfg, run


def _fake_rows(n: int, codes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fake reviews (another seed of the demo generator: never a record of the run) with the given codes."""
    texts = [r["text"] for r in demo_records(n, seed=99)]
    return [{"text": t, "codes": c} for t, c in zip(texts, codes, strict=True)]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("generic-eval")
    with pytest.MonkeyPatch.context() as mp:  # a module fixture runs outside the per-test ledger isolation
        mp.setenv("DPSYNTH_LEDGER", str(tmp / "ledger.sqlite"))
        cfg, run = _prepared(tmp, tiny_model_dir)
        test = read_records(run.test)
        # no_dp follows the real codes; dp has collapsed onto one (stars, genre) cell
        _write_arm(run, "no_dp", _fake_rows(len(test), [dict(r.codes) for r in test]))
        dp_rows = _fake_rows(30, [{"stars": 5, "genre": DOMAINS["genre"][0]}] * 30)
        dp_rows[0]["text"] += " I am Harold Finch, 4821 Maple Crossing, 212-555-0199. My secret code is 424242."
        _write_arm(run, "dp", dp_rows)
        return evaluate_run(cfg, run, progress=False)


def _metric(doc: dict[str, Any], name: str, arm: str) -> dict[str, Any]:
    (m,) = [m for m in doc["metrics"] if m["name"] == name and m["arm"] == arm]
    return m


def test_a_rating_like_code_named_stars_gets_the_rating_metrics(evaluated):
    doc = evaluated
    assert doc["run"]["label"] == "stars"
    assert doc["run"]["codes"] == [
        {"name": "stars", "values": DOMAINS["stars"], "role": "ordinal"},
        {"name": "genre", "values": DOMAINS["genre"], "role": "nominal"},
    ]
    assert not [n for n in doc["run"]["notes"] if "correlation preservation" in n]
    assert _metric(doc, "fidelity.correlation.frobenius", "no_dp")["value"] is not None
    assert _metric(doc, "fidelity.correlation.frobenius", "no_dp")["label"] == "stars"
    assert doc["distributions"]["correlation"]["names"][0] == "stars"
    wd = _metric(doc, "fidelity.stars.wasserstein", "dp")
    assert wd["ground_metric"] == "numeric" and wd["value"] > 0.5  # every dp record has 5 stars: far, in stars
    assert _metric(doc, "fidelity.genre.wasserstein", "dp")["ground_metric"] == "discrete"
    _, rows = headline_rows(doc)
    assert "stars Wasserstein" in [r[0] for r in rows] and "TSTR stars accuracy (TF-IDF)" in [r[0] for r in rows]


def test_every_code_is_measured_alike(evaluated):
    dist = evaluated["distributions"]
    for name, role in (("stars", "ordinal"), ("genre", "nominal")):
        assert dist[name]["domain"] == DOMAINS[name] and dist[name]["role"] == role
        assert set(dist[name]) >= {"real", "dp", "no_dp"}
    assert "rating" not in dist and "category" not in dist


def test_collapsed_code_cells_are_flagged(evaluated):
    cov = evaluated["distributions"]["code_coverage"]
    assert cov["names"] == ["stars", "genre"] and cov["cells"] == 25
    dp, no_dp = cov["arms"]["dp"], cov["arms"]["no_dp"]
    assert dp["cells"] == 1 and dp["collapsed"] and dp["expected_cells"] > 5
    assert 4 in dp["absent"]["stars"] and 5 not in dp["absent"]["stars"]
    assert not no_dp["collapsed"] and no_dp["cells"] == cov["real_cells"]


def test_samples_carry_their_codes(evaluated):
    for samples in evaluated["samples"].values():
        assert samples and all(set(s) == {"text", "codes"} and set(s["codes"]) == {"stars", "genre"} for s in samples)
    assert all(s["codes"] == {"stars": 5, "genre": DOMAINS["genre"][0]} for s in evaluated["samples"]["dp"])


def test_canary_shaped_personal_data_is_counted(evaluated):
    table = evaluated["tables"]["canary_leakage"]
    assert table["rows"]["dp"] == [0, 0, 0, 0]  # invented values: no exact canary field
    assert table["shape_rows"]["dp"] == [1, 1, 1, 1]  # but the canary's shape, every field of it
    assert table["shape_rows"]["no_dp"] == [0, 0, 0, 0]
    assert table["shape_base_rate"]["row"] == [0, 0, 0, 0] and table["shape_base_rate"]["n"] > 0
    assert _metric(evaluated, "privacy.canary_shape.phone_hits", "dp")["value"] == 1


def test_a_nominal_label_says_why_there_is_no_correlation(tmp_path, tiny_model_dir):
    cfg, run = _prepared(
        tmp_path, tiny_model_dir, "data.label=stars", "data.code_roles={stars: nominal}", "data.canary_rate=0"
    )
    test = read_records(run.test)
    _write_arm(run, "dp", _fake_rows(len(test), [dict(r.codes) for r in test]))
    doc = evaluate_run(cfg, run, progress=False)
    assert doc["run"]["label"] == "stars"
    assert any("the label code 'stars' is nominal" in n for n in doc["run"]["notes"])
    assert _metric(doc, "fidelity.stars.wasserstein", "dp")["ground_metric"] == "discrete"
