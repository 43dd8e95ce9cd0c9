"""The report does not mislead (issue 9): sample sizes and cautions, definitions that match their numbers, every code
alike, samples with their codes, collapsed code histograms and canary-shaped personal data."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dpsynth.report import build_report
from dpsynth.report.plots import tick_labels
from dpsynth.report.sizes import CAUTION, min_sample, too_small
from tests.report.fixtures import complete_metrics, make_run, privacy_json
from tests.report.html_parse import Parsed, parse

GENRES = ["Literary_Fiction_and_Poetry", "Travel_and_Adventure_Writing", "Science_Fiction_and_Fantasy", "Cookbooks"]


def _render(tmp_path: Path, doc: dict[str, Any]) -> tuple[str, Parsed]:
    html = build_report(make_run(tmp_path / "r", doc, privacy_json())).read_text(encoding="utf-8")
    return html, parse(html)


def _set(doc: dict[str, Any], name: str, arm: str, **fields: Any) -> None:
    (m,) = [m for m in doc["metrics"] if m["name"] == name and m["arm"] == arm]
    m.update(fields)


def _tiny(doc: dict[str, Any], n: int) -> dict[str, Any]:
    """Every metric on ``n`` records per arm (MAUVE at 1.0 in both arms, as a 5-record run printed)."""
    doc = copy.deepcopy(doc)
    for m in doc["metrics"]:
        if m["name"].startswith("utility."):
            m.update(n_test=n, n_train=n)
        else:
            m.update(n=n, n_real=n)
    _set(doc, "fidelity.mauve", "dp", value=1.0)
    _set(doc, "fidelity.mauve", "no_dp", value=1.0)
    return doc


def test_thresholds():
    assert [min_sample(n) for n in ("fidelity.mauve", "utility.tfidf.rating.accuracy", "privacy.dcr.median_ratio")] == [
        100,
        50,
        30,
    ]
    assert too_small("fidelity.mauve", 300, 99) and not too_small("fidelity.mauve", 300, None)
    assert not too_small("fidelity.length.kl", None)  # an unknown size is not flagged


def test_sample_sizes_next_to_each_metric_and_a_caution_when_too_small(tmp_path):
    html, p = _render(tmp_path, _tiny(complete_metrics(), 5))
    summary = p.text("summary")
    assert "MAUVE (1 = indistinguishable from real, higher is better): DP synthetic 1.000 (n=5 vs 5 real) ⚠" in summary
    assert "Too few records to mean anything (MAUVE needs 100 or more per side)" in summary
    assert "TSTR accuracy (tfidf, rating; 5 real test records)" in summary and "Too few test records" in summary
    assert "Small samples:" in summary
    assert '<li class="warn">MAUVE' in html
    (mauve,) = [t.rows for t in p.tables_in("fidelity") if t.rows and t.rows[0][0] == "fidelity.mauve"]
    assert mauve[0][1:3] == [f"1.000 (n=5 vs 5 real) {CAUTION}", f"1.000 (n=5 vs 5 real) {CAUTION}"]
    assert "fewer than 100 records per side for MAUVE, 50 real test records" in p.text("fidelity")
    appendix = next(t for t in p.tables_in("appendix") if t.columns[-1] == "sample")
    assert appendix.rows[0][-1] == f"n=5 vs 5 real {CAUTION}"


def test_large_samples_show_their_size_without_caution(tmp_path):
    _, p = _render(tmp_path, _tiny(complete_metrics(), 500))
    summary = p.text("summary")
    assert "DP synthetic 1.000 (n=500 vs 500 real) vs" in summary
    assert "Small samples" not in summary and "⚠" not in summary
    assert not [cell for t in p.tables for row in t.rows for cell in row if CAUTION in cell]
    assert "TSTR accuracy (tfidf, rating; 500 real test records)" in summary


def test_dcr_and_negative_excess_are_explained_in_their_direction(tmp_path):
    doc = complete_metrics()
    _, p = _render(tmp_path / "a", doc)
    privacy = p.text("privacy")
    assert "to the LEFT of it (closer to 0) suggest memorisation" in privacy
    assert "below 1 is the warning sign, 1 or above is fine, so higher is better for privacy up to 1" in privacy
    assert "Closer to the test curve" not in privacy  # the old caption contradicted "higher is better"
    assert "The verbatim excess is negative (DP synthetic -0.004)" in privacy  # the fixture's dp excess
    _set(doc, "privacy.verbatim.excess", "dp", value=0.01)
    _, p = _render(tmp_path / "b", doc)
    assert "verbatim excess is negative" not in p.text("privacy")


def test_a_negative_feature_importance_correlation_is_explained(tmp_path):
    doc = complete_metrics()
    _set(doc, "utility.tfidf.feature_importance_spearman", "dp", value=-0.55)
    _, p = _render(tmp_path / "neg", doc)
    assert "feature_importance_spearman is negative (DP synthetic -0.550)" in p.text("utility")
    assert "relies on different words" in p.text("utility")
    _, p = _render(tmp_path / "pos", complete_metrics())
    assert "is negative" not in p.text("utility")


def _generic(doc: dict[str, Any]) -> dict[str, Any]:
    """The complete fixture as if the codes were ``stars`` (the label) and ``genre``."""
    doc = copy.deepcopy(doc)
    d = doc["distributions"]
    d["stars"] = {**d.pop("rating"), "role": "ordinal", "label": True}
    d["genre"] = {"domain": GENRES, "real": [0.4, 0.3, 0.2, 0.1], "dp": [0.4, 0.3, 0.2, 0.1], "role": "nominal"}
    del d["category"]
    doc["run"]["label"] = "stars"
    doc["run"]["codes"] = [
        {"name": "stars", "values": [1, 2, 3, 4, 5], "role": "ordinal"},
        {"name": "genre", "values": GENRES, "role": "nominal"},
    ]
    return doc


def test_every_code_is_shown_alike_whatever_its_name(tmp_path):
    html, p = _render(tmp_path, _generic(complete_metrics()))
    fidelity = p.text("fidelity")
    assert "Control code stars (the label, ordinal)" in fidelity and "Control code genre (nominal)" in fidelity
    assert not [n for s, n in p.missing_notes if s == "fidelity"]
    assert "Share of records with each genre value" in fidelity
    assert 'id="fig-code-genre-' in html and 'id="fig-code-stars-' in html


def test_no_code_at_all_is_said_once(tmp_path):
    doc = complete_metrics()
    del doc["distributions"]["rating"], doc["distributions"]["category"]
    _, p = _render(tmp_path, doc)
    assert ("fidelity", "not measured: the data has no control codes") in p.missing_notes


def test_samples_show_their_codes_and_canaries_only_when_planted(tmp_path):
    doc = complete_metrics()
    doc["samples"]["dp"] = [{"text": "Five stars, a fine book.", "codes": {"stars": 5, "genre": "Cookbooks"}}]
    _, p = _render(tmp_path / "a", doc)
    samples = p.text("samples")
    assert "#1 · stars: 5, genre: Cookbooks Five stars, a fine book." in samples
    assert "each after the control codes it was generated from" in samples
    assert "canary we planted" in samples
    doc["run"]["canaries"] = None
    _, p = _render(tmp_path / "b", doc)
    assert "canar" not in p.text("samples")


def test_a_collapsed_code_histogram_is_flagged_in_the_summary(tmp_path):
    doc = complete_metrics()
    doc["distributions"]["code_coverage"] = {
        "names": ["rating", "category"],
        "cells": 25,
        "real_cells": 20,
        "n_real": 200,
        "arms": {
            "dp": {"n": 300, "cells": 3, "expected_cells": 19.6, "absent": {"rating": [1, 2, 3]}, "collapsed": True},
            "no_dp": {"n": 300, "cells": 19, "expected_cells": 19.6, "absent": {}, "collapsed": False},
        },
    }
    html, p = _render(tmp_path, doc)
    summary = p.text("summary")
    assert (
        "The DP synthetic records fall in 3 of 25 rating x category cells, where as many records drawn from the real "
        "distribution would fill about 19.6: the control-code histogram collapsed" in summary
    )
    assert "(no rating 1, 2, 3)" in summary and "non-DP baseline records fall" not in summary
    assert '<li class="warn">The DP synthetic records fall in 3 of 25' in html
    assert "The DP arm has no record with rating 1, 2, 3" in p.text("fidelity")


def test_canary_shaped_records_are_counted_next_to_exact_ones(tmp_path):
    doc = complete_metrics()
    table = doc["tables"]["canary_leakage"]
    table["shape_rows"] = {"dp": [0, 0, 0, 0], "no_dp": [5, 5, 5, 4]}
    table["shape_base_rate"] = {"n": 200, "row": [0, 0, 1, 0]}
    _, p = _render(tmp_path / "a", doc)
    (shape,) = [t for t in p.tables_in("privacy") if "ANY value" in t.caption]
    assert shape.rows == [
        ["DP synthetic", "0", "0", "0", "0", "300"],
        ["non-DP baseline", "5", "5", "5", "4", "300"],
        ["real test split (base rate)", "0", "0", "1", "0", "200"],
    ]
    assert "canary-shaped fields with any value: 0 in the DP arm / 19 in the non-DP arm" in p.text("summary")
    table["shape_rows"]["dp"] = [1, 1, 1, 1]
    html, _ = _render(tmp_path / "b", doc)
    assert '<li class="warn">Canary leakage: none in the DP arm' in html  # exact none, but the shape is there


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_tick_labels_fit_their_slot_or_go_horizontal(n):
    labels = tick_labels(GENRES[:n] if n <= 4 else GENRES * 2)
    if labels is None:
        return
    slot = 7.0 * 72 * 0.85 / 5.4 / (n if n <= 4 else 8)
    assert all(len(line) < slot for label in labels for line in label.split("\n"))
    assert all(label.count("\n") < 3 for label in labels)
