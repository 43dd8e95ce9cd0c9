"""The fidelity section: does the synthetic data look like the real data, distribution by distribution?

Plots come first because a divergence number alone hides *how* two distributions differ (a DP model that writes
shorter reviews, or only 5-star ones); the KL and Wasserstein table then puts numbers on each plot, and MAUVE sums up
text-level similarity. Every plot shows the real reference in grey so a reader compares each arm with it.
"""

from __future__ import annotations

import re

from dpsynth.report import plots
from dpsynth.report.fmt import arm_label, fmt, order_arms
from dpsynth.report.inputs import Inputs, as_map
from dpsynth.report.model import Figure, Metric, Part, Section, Table, missing, pivot

_DIVERGENCE = re.compile(r"^fidelity\.(?P<quantity>.+)\.(?P<kind>kl|wasserstein)$")


def build_fidelity(inp: Inputs) -> Section:
    d = inp.distributions
    parts = [
        _hist_part(
            "Length distribution",
            as_map(d.get("length_tokens")),
            key="length",
            xlabel="length in tokens",
            caption="Length of each record in tokens: real test split (grey) and each synthetic arm, as densities. "
            "The closer an arm's curve is to the grey one, the better.",
            reason="record lengths were not measured",
        ),
        _code_part("Rating distribution", d.get("rating"), key="rating", xlabel="rating", reason="no rating code"),
        _code_part(
            "Category distribution",
            d.get("category"),
            key="category",
            xlabel="category",
            reason="the data has no category code",
        ),
        _hist_part(
            "Nearest-real similarity",
            as_map(d.get("nearest_real_similarity")),
            key="nearest",
            xlabel="cosine similarity to the nearest real record",
            caption="For each synthetic record, the cosine similarity of its embedding to the nearest real record; "
            "the reference (grey) is the same for held-out real records (as in Figure 2 of the seed paper). An arm "
            "matching the reference is best; mass to the left means unrealistic text, a pile-up near 1 beyond the "
            "reference suggests copying.",
            reason="nearest-real similarities were not measured",
        ),
        _mauve_part(inp),
        _divergence_part(inp),
    ]
    other = pivot(inp.index.remaining("fidelity"), "Fidelity metrics not shown above.")
    if other is not None:
        parts.append(Part(title="Other fidelity metrics", tables=[other]))
    return Section(id="fidelity", title="Fidelity", parts=parts)


def _hist_part(title: str, series: object, *, key: str, xlabel: str, caption: str, reason: str) -> Part:
    svg = plots.histogram(as_map(series), key=key, xlabel=xlabel)
    if svg is None:
        return missing(title, reason)
    return Part(title=title, figures=[Figure(svg, caption)])


def _code_part(title: str, spec: object, *, key: str, xlabel: str, reason: str) -> Part:
    spec = as_map(spec)
    domain = spec.get("domain")
    if not spec or not isinstance(domain, list) or not domain:
        return missing(title, reason)
    series = {k: v for k, v in spec.items() if k != "domain"}
    svg = plots.grouped_bars(domain, series, key=key, ylabel="share of records", xlabel=xlabel)
    if svg is None:
        return missing(title, f"no {xlabel} frequencies matching its domain of {len(domain)} values")
    return Part(
        title=title,
        figures=[
            Figure(
                svg,
                f"Share of records with each {xlabel} value, real and per synthetic arm. Bars matching the real "
                "ones are better.",
            )
        ],
    )


def _mauve_part(inp: Inputs) -> Part:
    metrics = inp.index.take(lambda m: m.group == "fidelity" and "mauve" in m.name)
    table = pivot(
        metrics,
        "MAUVE between the real and synthetic texts' embedding distributions: 1 means indistinguishable, values near "
        "0 very different. Higher is better.",
    )
    if table is None:
        return missing("MAUVE", "MAUVE was not computed")
    return Part(title="MAUVE", tables=[table])


def _divergence_part(inp: Inputs) -> Part:
    title = "Divergences (KL and Wasserstein)"
    metrics: list[Metric] = inp.index.take(lambda m: m.group == "fidelity" and _DIVERGENCE.match(m.name) is not None)
    if not metrics:
        return missing(title, "no KL or Wasserstein metrics in metrics.json")
    quantities: list[str] = []
    values: dict[tuple[str, str, str], float | None] = {}
    for m in metrics:
        match = _DIVERGENCE.match(m.name)
        assert match is not None
        if match["quantity"] not in quantities:
            quantities.append(match["quantity"])
        values[(match["quantity"], match["kind"], m.arm)] = m.value
    arms = order_arms([m.arm for m in metrics])
    rows = []
    for q in quantities:
        for kind, label in (("kl", "KL"), ("wasserstein", "Wasserstein-1")):
            if any((q, kind, a) in values for a in arms):
                rows.append([q, label, *(fmt(values[(q, kind, a)]) if (q, kind, a) in values else "" for a in arms)])
    table = Table(
        columns=["quantity", "divergence", *(arm_label(a) for a in arms)],
        rows=rows,
        numeric=[False, False, *([True] * len(arms))],
        caption="KL(real ‖ synthetic) in nats on smoothed histograms, and the Wasserstein-1 distance in the "
        "quantity's unit (tokens, stars; total variation for an unordered code). 0 means identical; lower is better.",
    )
    return Part(title=title, tables=[table])
