"""The report's small parts: number formatting, table parsing, the metric index, plots; and the docstring examples."""

from __future__ import annotations

import doctest
import importlib

import pytest

from dpsynth.report import plots
from dpsynth.report.fmt import fmt, order_arms, pct
from dpsynth.report.model import MetricIndex, pivot
from dpsynth.report.tables import quality_rows, utility_accuracy


@pytest.mark.parametrize("name", ["fmt", "plots"])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"dpsynth.report.{name}")
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.30000000000000004, "0.300"),
        (3.98765, "3.988"),
        (1e-5, "1e-05"),
        (2.5e-7, "2.5e-07"),
        (0, "0"),
        (0.0, "0"),
        (-0.004, "-0.004"),
        (1234567, "1,234,567"),
        (12345.678, "12,345.7"),
        (3.2e9, "3.2e+09"),
        (True, "yes"),
        (None, "—"),
        (float("nan"), "NaN"),
        (float("-inf"), "−∞"),
        ("prv", "prv"),
    ],
)
def test_fmt(value: object, shown: str) -> None:
    assert fmt(value) == shown


def test_pct_and_arm_order() -> None:
    assert pct(1 / 3) == "33.3%" and pct(None) == "—"
    assert order_arms(["no_dp", "custom", "dp", "real", "dp"]) == ["real", "dp", "no_dp", "custom"]


def test_quality_rows_accept_counts_or_rates() -> None:
    table = {
        "columns": ["arm", "n", "well_formed", "gibberish"],
        "rows": [["dp", 200, 150, 10], ["no_dp", 200, 0.75, 0.05], ["real", None, 3, 0.5]],
    }
    q = quality_rows(table)
    assert q is not None
    assert q.rows["dp"] == (200, {"well_formed": 150, "gibberish": 10}, {"well_formed": 0.75, "gibberish": 0.05})
    assert q.rows["no_dp"] == (200, {"well_formed": 150, "gibberish": 10}, {"well_formed": 0.75, "gibberish": 0.05})
    assert q.rows["real"] == (None, {"well_formed": 3, "gibberish": None}, {"well_formed": None, "gibberish": 0.5})


def test_utility_accuracy_keeps_numbers_only() -> None:
    table = {
        "columns": ["source", "family", "task", "accuracy", "macro_f1"],
        "rows": [["dp", "tfidf", "rating", 0.5, 0.4], ["real", "tfidf", "rating", None, None], ["x"]],
        "majority_accuracy": {"rating": 0.3, "bad": "n/a"},
    }
    assert utility_accuracy(table) == ({("tfidf", "rating"): {"dp": 0.5}}, {"rating": 0.3})


def test_metric_index_shows_each_metric_once() -> None:
    idx = MetricIndex(
        [
            {"name": "fidelity.mauve", "group": "fidelity", "arm": "dp", "value": 0.8, "better": "higher"},
            {"name": "fidelity.mauve", "group": "fidelity", "arm": "no_dp", "value": 0.9, "better": "higher"},
            {"name": "fidelity.other", "group": "fidelity", "arm": "dp", "value": 3, "better": "none"},
            {"name": "utility.x", "arm": "dp", "value": "bad"},  # group from the name; non-number -> None
        ]
    )
    assert idx.get("fidelity.other", "dp") == 3 and isinstance(idx.get("fidelity.other", "dp"), int)
    taken = idx.take(lambda m: "mauve" in m.name)
    assert [m.arm for m in taken] == ["dp", "no_dp"]
    assert [m.name for m in idx.remaining("fidelity")] == ["fidelity.other"]
    assert idx.remaining("fidelity") == []
    assert [(m.group, m.value) for m in idx.remaining("utility")] == [("utility", None)]
    table = pivot(taken)
    assert table is not None
    assert table.columns == ["metric", "DP synthetic", "non-DP baseline", "better", "definition"]
    assert table.rows == [["fidelity.mauve", "0.800", "0.900", "↑ higher", ""]]


def test_a_mean_over_draws_shows_its_spread() -> None:
    """MAUVE is a mean over draws: the report prints the standard deviation beside it, and nothing for one draw."""
    entry = {"name": "fidelity.mauve", "group": "fidelity", "arm": "dp", "value": 0.8, "n": 500, "n_real": 500}
    idx = MetricIndex([{**entry, "sd": 0.02}, {**entry, "arm": "no_dp", "sd": None}, {**entry, "arm": "x", "sd": "?"}])
    shown = {m.arm: m.shown() for m in idx.metrics}
    assert shown["dp"].startswith("0.800 ± 0.020 (")
    assert "±" not in shown["no_dp"] and "±" not in shown["x"]


def test_plots_skip_empty_series_and_return_none_without_data() -> None:
    assert plots.histogram({"dp": [], "real": None}, key="x", xlabel="x") is None
    assert plots.grouped_bars([1, 2], {"dp": [0.5]}, key="x", ylabel="y", xlabel="x") is None
    assert plots.utility_bars({}, {}, key="x") is None
    svg = plots.histogram({"dp": [1.0, 1.0, 1.0]}, key="one-value", xlabel="x")  # zero-width range
    assert svg is not None and svg.startswith("<svg") and 'id="fig-one-value-' in svg
    with pytest.raises(ValueError, match="figure key"):
        plots.histogram({"dp": [1.0]}, key="Bad Key", xlabel="x")


def test_many_categories_plot_horizontally() -> None:
    domain = [f"category {i}" for i in range(20)]
    svg = plots.grouped_bars(domain, {"real": [0.05] * 20, "dp": [0.05] * 20}, key="many", ylabel="y", xlabel="c")
    assert svg is not None and all(f">category {i}</text>" in svg for i in range(20))
