"""build_report on hand-made run directories: structure, numbers, escaping, self-containment, atomic write."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from dpsynth.report import build_report, render_report
from dpsynth.report.build import SECTION_IDS
from dpsynth.report.fmt import arm_label, fmt
from dpsynth.rundir import RunDir
from tests.report.fixtures import XSS_SAMPLE, complete_metrics, make_run, privacy_json
from tests.report.html_parse import Parsed, parse


@pytest.fixture()
def complete_run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path / "run", complete_metrics(), privacy_json())


@pytest.fixture()
def complete_html(complete_run: RunDir) -> str:
    return build_report(complete_run).read_text(encoding="utf-8")


def _appendix_rows(p: Parsed) -> list[list[str]]:
    (table,) = [t for t in p.tables_in("appendix") if t.columns[:2] == ["group", "name"]]
    return table.rows


def test_writes_report_html_with_every_section(complete_run: RunDir) -> None:
    path = build_report(complete_run)
    assert path == complete_run.report_html
    p = parse(path.read_text(encoding="utf-8"))
    assert p.sections == list(SECTION_IDS)
    assert p.missing_notes == [], "a complete run should not have 'not measured' notes"


def test_every_metric_is_in_the_appendix_with_its_formatted_value(complete_html: str) -> None:
    rows = _appendix_rows(parse(complete_html))
    metrics = complete_metrics()["metrics"]
    assert len(rows) == len(metrics)
    for m, row in zip(metrics, rows, strict=True):
        assert row[:4] == [m["group"], m["name"], arm_label(m["arm"]), fmt(m["value"])]
        assert row[5] == m["definition"]


def test_numbers_are_formatted_not_raw(complete_html: str) -> None:
    summary = parse(complete_html).text("summary")
    assert "(3.988, 1e-05)-differentially private" in summary
    assert "so it is not differentially private" in summary  # the report itself reads the real data
    assert "3.98765" not in complete_html  # the raw float never leaks through
    assert "0.8765" not in summary and "0.876" in summary  # noise multiplier to 3 decimals
    ledger = [t for t in parse(complete_html).tables_in("summary") if "ledger" in t.caption]
    assert ["ε of all this source's releases, composed", "5.432"] in ledger[0].rows
    assert ["source budget", "ε 10.000, δ 1e-05"] in ledger[0].rows
    assert ["status", "committed"] in ledger[0].rows


def test_summary_verdicts_are_computed_from_the_metrics(complete_html: str) -> None:
    summary = parse(complete_html).text("summary")
    assert (
        "Canary leakage: none in the DP arm / 10 field matches in the non-DP arm (Name 3, Street 2, Phone 1, Canary 4)"
        in summary
    )
    assert "MAUVE (1 = indistinguishable from real, higher is better): DP synthetic 0.812 vs non-DP baseline 0.935" in (
        summary
    )
    assert (
        "TSTR accuracy (tfidf, rating): real 0.701 vs DP synthetic 0.612 vs non-DP baseline 0.655; majority class"
        in (summary)
    )
    assert "Empirical ε lower bound (audit) 0.432 ≤ claimed ε 3.988: consistent" in summary
    assert "Mean canary exposure (bits; ~1.4 means nothing memorised): DP synthetic 1.235 / non-DP baseline 8.765" in (
        summary
    )
    for mech in ("dp_sgd", "gaussian_histogram"):
        assert mech in summary


def test_verdicts_follow_the_data(tmp_path: Path) -> None:
    """The verdicts are not canned: change the inputs and they change (leakage in the DP arm, audit above epsilon)."""
    doc = complete_metrics()
    doc["tables"]["canary_leakage"]["rows"]["dp"] = [0, 0, 0, 2]
    doc["audit"]["dp"]["eps_lb"] = 5.5
    doc["metrics"] = [m for m in doc["metrics"] if m["name"] != "fidelity.mauve"]
    html = build_report(make_run(tmp_path / "r", doc, privacy_json())).read_text(encoding="utf-8")
    summary = parse(html).text("summary")
    assert "2 field matches in the DP arm (Canary 2)" in summary
    assert "EXCEEDS the claimed ε 3.988" in summary
    assert "MAUVE" not in summary  # no evidence, no verdict
    assert re.search(r'<li class="bad">Canary leakage', html)


def test_privacy_section_tables(complete_html: str) -> None:
    p = parse(complete_html)
    canary = [t for t in p.tables_in("privacy") if t.columns[1:5] == ["Name", "Street", "Phone", "Canary"]]
    assert canary[0].rows == [
        ["DP synthetic", "0", "0", "0", "0", "300"],
        ["non-DP baseline", "3", "2", "1", "4", "300"],
    ]
    mia = [t for t in p.tables_in("privacy") if t.columns == ["arm", "attack", "AUC", "TPR at 1% FPR"]]
    assert mia[0].rows[0] == ["DP model", "loss", "0.501", "0.010"]
    text = p.text("privacy")
    assert "is not for release" in text
    # which model the reference attack calibrates against (with a warm start it is not the bare base model)
    assert "reference model (it never saw a private record): the base model with the public warm start" in text
    # The DP bound on TPR at 1% FPR is computed from the guarantee, not written in.
    assert f"= {fmt(min(1.0, math.exp(3.98765) * 0.01 + 1e-5))} at 1% FPR" in text
    other = [t for t in p.tables_in("privacy") if t.caption == "Privacy metrics not shown above."]
    assert [r[0] for r in other[0].rows] == ["privacy.special.unusual_check"]  # an unknown metric is still shown


def test_fidelity_utility_quality_tables(complete_html: str) -> None:
    p = parse(complete_html)
    div = next(t for t in p.tables_in("fidelity") if t.columns[:2] == ["quantity", "divergence"])
    assert ["length", "KL", "0.123", "0.046"] in div.rows
    assert ["length", "Wasserstein-1", "12.346", "4.568"] in div.rows
    util = next(t for t in p.tables_in("utility") if t.columns[:3] == ["features", "task", "trained on"])
    assert ["tfidf", "rating", "DP logistic regression on real", "0.543", "0.443"] in util.rows
    assert ["tfidf", "rating", "majority class (floor)", "0.444", ""] in util.rows
    quality = p.tables_in("quality")[0]
    assert quality.rows[1] == ["DP synthetic", "300", "180 (60.0%)", "15 (5.0%)", "90 (30.0%)", "30 (10.0%)"]
    assert "gibberish: fewer than 50% letters or more than 30% out-of-dictionary words" in p.text("quality")


def test_synthetic_text_is_escaped(complete_html: str) -> None:
    """Markup in a synthetic record or a category name is shown as text, never interpreted."""
    assert "<script" not in complete_html.lower()
    assert "<img" not in complete_html.lower()
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in complete_html
    assert XSS_SAMPLE in parse(complete_html).text("samples")  # decoded, it reads exactly as generated
    # In the plot too: matplotlib's SVG writer escapes the label, and "$" is not taken for mathtext.
    # (wrapped onto two lines so that it does not overlap its neighbours: matplotlib writes a <text> per line)
    assert ">&lt;img src=x onerror=1&gt;</text>" in complete_html and ">&amp; $5-$10</text>" in complete_html


def test_report_is_self_contained(complete_html: str) -> None:
    p = parse(complete_html)
    for tag, attr, value in p.attrs:
        if attr in ("src", "href", "xlink:href", "action", "srcset", "poster"):
            assert value.startswith(("#", "data:")), f"<{tag} {attr}={value!r}> points outside the file"
    for tag in ("script", "link", "iframe", "object", "embed", "img"):
        assert p.tags[tag] == 0, f"unexpected <{tag}>"
    assert not re.search(r"url\(\s*['\"]?(https?:|//)", complete_html)
    assert "@import" not in complete_html
    assert "default-src 'none'" in complete_html  # the page's CSP forbids any load that slipped in anyway


def test_plots_are_inline_svg_with_unique_ids(complete_html: str) -> None:
    p = parse(complete_html)
    # length, rating, category, nearest-real similarity, DCR, utility accuracy
    assert p.tags["svg"] == 6
    assert p.tags["figure"] == 6 and p.tags["figcaption"] == 6
    duplicated = [i for i, n in p.ids.items() if n > 1]
    assert duplicated == []
    local_refs = {v[1:] for _, a, v in p.attrs if a in ("href", "xlink:href") and v.startswith("#")}
    assert local_refs <= set(p.ids), "an SVG reference points at a missing id"
    assert len(complete_html.encode()) < 2_000_000


def test_size_does_not_grow_with_the_number_of_records(tmp_path: Path) -> None:
    doc = complete_metrics()
    big = [float(i % 97) for i in range(60_000)]
    for key in ("length_tokens", "nearest_real_similarity", "dcr"):
        for arm in doc["distributions"][key]:
            doc["distributions"][key][arm] = big
    html = build_report(make_run(tmp_path / "r", doc, privacy_json())).read_text(encoding="utf-8")
    assert len(html.encode()) < 2_000_000


def test_rendering_is_deterministic_apart_from_the_build_time(complete_run: RunDir) -> None:
    a, b = render_report(complete_run), render_report(complete_run)
    strip = re.compile(r"built \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    assert strip.sub("", a) == strip.sub("", b)


def test_written_atomically_and_no_temporary_file_left(complete_run: RunDir) -> None:
    build_report(complete_run)
    assert sorted(p.name for p in complete_run.root.iterdir()) == ["dp", "eval", "report.html"]


def test_a_failed_write_keeps_the_previous_report(complete_run: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    complete_run.report_html.write_text("previous report", encoding="utf-8")
    real_write_text = Path.write_text

    def half_then_crash(self: Path, data: str, *args: object, **kwargs: object) -> int:
        real_write_text(self, data[: len(data) // 2], encoding="utf-8")
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        build_report(complete_run)
    monkeypatch.undo()
    assert complete_run.report_html.read_text(encoding="utf-8") == "previous report"
    assert sorted(p.name for p in complete_run.root.iterdir()) == ["dp", "eval", "report.html"]
