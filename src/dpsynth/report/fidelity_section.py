"""The fidelity section: does the synthetic data look like the real data, distribution by distribution?

Plots come first because a divergence number alone hides *how* two distributions differ (a DP model that writes
shorter reviews, or only 5-star ones); the KL and Wasserstein table then puts numbers on each plot, and MAUVE sums up
text-level similarity. Every plot shows the real reference in grey so a reader compares each arm with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dpsynth.report import plots
from dpsynth.report.fmt import arm_label, arm_short, fmt, order_arms
from dpsynth.report.inputs import Inputs, as_map
from dpsynth.report.model import Figure, Metric, Part, Section, Table, missing, pivot, with_sizes_note

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
        *_code_parts(inp),
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


def code_names(inp: Inputs) -> list[tuple[str, str | None, bool]]:
    """(name, role, is the label) of every control code: from ``run.codes`` when metrics.json has it, else every
    distribution with a ``domain`` (older metrics.json), so that every code is shown alike whatever its name."""
    codes = inp.run.get("codes")
    label = inp.run.get("label")
    if isinstance(codes, list) and codes:
        out = [
            (str(c["name"]), c.get("role"), c["name"] == label) for c in codes if isinstance(c, Mapping) and "name" in c
        ]
        if out:
            return out
    return [
        (name, as_map(v).get("role"), bool(as_map(v).get("label")))
        for name, v in inp.distributions.items()
        if isinstance(as_map(v).get("domain"), list)
    ]


def _code_parts(inp: Inputs) -> list[Part]:
    names = code_names(inp)
    if not names:
        return [missing("Control codes", "the data has no control codes")]
    return [_code_part(inp, name, role, is_label) for name, role, is_label in names]


def _code_part(inp: Inputs, name: str, role: str | None, is_label: bool) -> Part:
    kind = ", ".join(x for x in ("the label" if is_label else "", role or "") if x)
    title = f"Control code {name}" + (f" ({kind})" if kind else "")
    spec = as_map(inp.distributions.get(name))
    domain = spec.get("domain")
    if not spec or not isinstance(domain, list) or not domain:
        return missing(title, f"the {name} distribution is missing from metrics.json")
    series = {k: v for k, v in spec.items() if k not in ("domain", "role", "label")}
    key = "code-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "x")
    svg = plots.grouped_bars(domain, series, key=key, ylabel="share of records", xlabel=name)
    if svg is None:
        return missing(title, f"no {name} frequencies matching its domain of {len(domain)} values")
    part = Part(
        title=title,
        figures=[
            Figure(
                svg,
                f"Share of records with each {name} value, real and per synthetic arm. Bars matching the real "
                "ones are better.",
            )
        ],
    )
    part.paragraphs += collapse_notes(inp, only=name)
    return part


def collapse_notes(inp: Inputs, only: str | None = None) -> list[str]:
    """Sentences about arms whose records collapsed onto few code cells, or lack common values of a code (``only``:
    the values of that code, without the joint-cell sentence)."""
    cov = as_map(inp.distributions.get("code_coverage"))
    arms = as_map(cov.get("arms"))
    out = []
    for arm in order_arms(list(arms)):
        a = as_map(arms[arm])
        absent = {k: v for k, v in as_map(a.get("absent")).items() if isinstance(v, list) and v}
        if only is not None:
            if only in absent:
                values = ", ".join(str(v) for v in absent[only])
                out.append(
                    f"The {arm_short(arm)} arm has no record with {only} {values}, which the real distribution "
                    f"expects at least 3 times among its {fmt(a.get('n'))} records."
                )
            continue
        if a.get("collapsed"):
            out.append(collapse_sentence(arm, a, cov, absent))
    return out


def collapse_sentence(arm: str, a: Mapping[str, Any], cov: Mapping[str, Any], absent: Mapping[str, Any]) -> str:
    names = " x ".join(str(n) for n in cov.get("names") or [])
    gone = "; ".join(f"no {k} {', '.join(str(v) for v in vals)}" for k, vals in absent.items())
    return (
        f"The {arm_label(arm)} records fall in {fmt(a.get('cells'))} of {fmt(cov.get('cells'))} {names} cells, where "
        f"as many records drawn from the real distribution would fill about {fmt(a.get('expected_cells'), 1)}: the "
        "control-code histogram collapsed (its noise wiped out most cells)" + (f" ({gone})" if gone else "") + "."
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
    values: dict[tuple[str, str, str], str] = {}
    for m in metrics:
        match = _DIVERGENCE.match(m.name)
        assert match is not None
        if match["quantity"] not in quantities:
            quantities.append(match["quantity"])
        values[(match["quantity"], match["kind"], m.arm)] = m.shown()
    arms = order_arms([m.arm for m in metrics])
    rows = []
    for q in quantities:
        for kind, label in (("kl", "KL"), ("wasserstein", "Wasserstein-1")):
            if any((q, kind, a) in values for a in arms):
                rows.append([q, label, *(values.get((q, kind, a), "") for a in arms)])
    table = Table(
        columns=["quantity", "divergence", *(arm_label(a) for a in arms)],
        rows=rows,
        numeric=[False, False, *([True] * len(arms))],
        caption=with_sizes_note(
            "KL(real ‖ synthetic) in nats on smoothed histograms, and the Wasserstein-1 distance in the quantity's "
            "unit (tokens; positions for an ordinal code such as stars; total variation for a nominal code). 0 means "
            "identical; lower is better.",
            metrics,
        ),
    )
    return Part(title=title, tables=[table])
