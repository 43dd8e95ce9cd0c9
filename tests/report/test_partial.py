"""Partial and broken inputs: the report says what was not measured (and why) instead of crashing or inventing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpsynth.errors import DPSynthError
from dpsynth.report import build_report
from dpsynth.report.build import SECTION_IDS
from dpsynth.rundir import RunDir, write_json
from tests.report.fixtures import complete_metrics, make_run, partial_metrics, privacy_json
from tests.report.html_parse import parse


def _notes(html: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for section, text in parse(html).missing_notes:
        out.setdefault(section, []).append(text)
    return out


def test_partial_run_renders_not_measured_notes(tmp_path: Path) -> None:
    """No canaries, no category code, no non-DP arm, no audit, MIA or quality; no privacy.json."""
    html = build_report(make_run(tmp_path / "r", partial_metrics(), None)).read_text(encoding="utf-8")
    p = parse(html)
    assert p.sections == list(SECTION_IDS)
    notes = _notes(html)
    assert "not measured: no canaries were planted in the training data" in notes["privacy"]
    assert any("no non-DP baseline arm" in n for n in notes["privacy"])
    assert "not measured: no audit was run (an audit trains with planted canaries to lower-bound ε)" in notes["privacy"]
    assert "fidelity" not in notes  # no category code is no gap: each code the data has is shown, whatever its name
    assert "Control code rating" in p.text("fidelity") and "Control code category" not in p.text("fidelity")
    assert "not measured: the quality table is missing from metrics.json" in notes["quality"]
    assert "not measured: this run has no such arm" in notes["samples"]
    # The guarantee still shows, taken from metrics.json's copy and saying so.
    summary = p.text("summary")
    assert "(3.988, 1e-05)-differentially private" in summary
    assert "from eval/metrics.json (run.dp)" in summary
    assert "Canary leakage" not in summary and "non-DP" not in summary
    # Plots of what exists: length, rating, nearest-real, DCR, utility (no category).
    assert p.tags["svg"] == 5
    # Membership inference has no table but its metric is still shown.
    assert "privacy.mia.loss.auc" in p.text("privacy")


def test_metrics_json_with_nothing_but_the_version(tmp_path: Path) -> None:
    html = build_report(make_run(tmp_path / "r", {"schema_version": 1}, None)).read_text(encoding="utf-8")
    p = parse(html)
    assert p.sections == list(SECTION_IDS)
    assert p.tags["svg"] == 0
    assert "No differentially private arm in this run" in p.text("summary")
    notes = _notes(html)
    for section in SECTION_IDS:
        if section != "summary":
            assert notes.get(section), f"section {section} should say what is missing"
    assert "not measured: metrics.json lists no metrics" in notes["appendix"]


def test_nulls_and_malformed_parts_do_not_crash(tmp_path: Path) -> None:
    doc = complete_metrics()
    doc["run"] = None
    doc["metrics"].append({"value": 1.0})  # no name: skipped and counted
    doc["metrics"].append("not a metric")
    doc["tables"]["utility"]["rows"].append(["dp", "tfidf"])  # too short: dropped
    doc["tables"]["mia"] = {"columns": ["arm"], "rows": "oops"}
    doc["tables"]["canary_leakage"]["rows"] = {"dp": [0, 0, "x", 0]}  # non-numeric: dropped
    doc["distributions"]["rating"]["dp"] = [0.5, 0.5]  # length differs from the domain: dropped from the plot
    doc["distributions"]["length_tokens"] = {"real": [], "dp": None}
    doc["distributions"]["dcr"] = {"test": [0.1, float("nan"), "x"], "dp": [0.2, 0.3]}
    doc["samples"] = {"dp": "not a list", "no_dp": [None, 3]}
    doc["timing_s"] = None
    run = make_run(tmp_path / "r", None, privacy_json())
    run.eval_dir.mkdir(parents=True)
    run.metrics_json.write_text(json.dumps(doc), encoding="utf-8")  # json.dumps writes NaN, as a foreign tool might
    html = build_report(run).read_text(encoding="utf-8")
    p = parse(html)
    assert p.sections == list(SECTION_IDS)
    assert "2 malformed metric entries in metrics.json were skipped" in p.text("")
    notes = _notes(html)
    assert "not measured: record lengths were not measured" in notes["fidelity"]
    assert "not measured: the canary leakage table in metrics.json has no well-formed row" in notes["privacy"]
    assert p.tags["svg"] == 5  # rating (without the bad series), category, nearest-real, DCR (finite values), utility
    assert "not measured: no samples of this arm" in notes["samples"]


def test_newer_schema_version_warns(tmp_path: Path) -> None:
    doc = complete_metrics()
    doc["schema_version"] = 2
    html = build_report(make_run(tmp_path / "r", doc, privacy_json())).read_text(encoding="utf-8")
    assert "metrics.json has schema_version 2; this report understands version 1" in parse(html).text("")


def test_stale_metrics_disagreeing_with_privacy_json_warn(tmp_path: Path) -> None:
    privacy = privacy_json()
    privacy["epsilon"] = 2.5
    html = build_report(make_run(tmp_path / "r", complete_metrics(), privacy)).read_text(encoding="utf-8")
    p = parse(html)
    assert "epsilon is 2.5 in dp/privacy.json but 3.98765 in eval/metrics.json" in p.text("")
    assert "(2.500, 1e-05)-differentially private" in p.text("summary")  # privacy.json is the source of truth


def test_pending_or_absent_ledger_entry(tmp_path: Path) -> None:
    privacy = privacy_json()
    privacy["ledger"] = {"path": "/x/ledger.sqlite", "entry": 3, "source": "sha256:ff", "status": "pending"}
    html = build_report(make_run(tmp_path / "a", complete_metrics(), privacy)).read_text(encoding="utf-8")
    assert "The ledger entry is pending, not committed." in parse(html).text("summary")
    del privacy["ledger"]
    doc = complete_metrics()
    del doc["run"]["dp"]["ledger"]
    html = build_report(make_run(tmp_path / "b", doc, privacy)).read_text(encoding="utf-8")
    assert "not measured: the release was not recorded in a privacy ledger" in _notes(html)["summary"]


def test_a_mechanism_charged_before_is_named_in_the_ledger_table(tmp_path: Path) -> None:
    privacy = privacy_json()
    privacy["ledger"]["charged_before"] = {"length_histogram": 7}
    html = build_report(make_run(tmp_path / "r", complete_metrics(), privacy)).read_text(encoding="utf-8")
    ledger = [tb for tb in parse(html).tables_in("summary") if "ledger" in tb.caption]
    (row,) = [r for r in ledger[0].rows if r[0] == "charged before, as entries of their own"]
    assert row[1].startswith("length_histogram #7 (this entry's own")
    assert not [r for r in ledger[0].rows if r[0] == "charged_before"]  # not also as a raw key


def test_missing_metrics_json_is_a_user_error(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    with pytest.raises(DPSynthError, match=r"metrics.json is missing: run `dpsynth evaluate --out"):
        build_report(run)
    assert not run.report_html.exists()


def test_invalid_json_names_the_file_and_line(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.eval_dir.mkdir(parents=True)
    run.metrics_json.write_text('{"schema_version": 1,\n  "metrics": [,]}', encoding="utf-8")
    with pytest.raises(DPSynthError, match=r"metrics.json:2: metrics.json is not valid JSON"):
        build_report(run)
    write_json(run.metrics_json, [1, 2])
    with pytest.raises(DPSynthError, match="expected a JSON object"):
        build_report(run)


def test_unreadable_privacy_json_falls_back_with_a_warning(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", complete_metrics(), None)
    run.privacy_json("dp").parent.mkdir(parents=True, exist_ok=True)
    run.privacy_json("dp").write_text("{not json", encoding="utf-8")
    html = build_report(run).read_text(encoding="utf-8")
    p = parse(html)
    assert "privacy.json is not valid JSON" in p.text("")
    assert "from eval/metrics.json (run.dp)" in p.text("summary")
    json.loads(json.dumps(p.sections))  # rendered fully
    assert p.sections == list(SECTION_IDS)
