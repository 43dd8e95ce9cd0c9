"""The privacy section: empirical evidence about the released text, next to the formal guarantee.

Why this section exists although DP is proven: the guarantee holds only if the code is right, and the empirical
checks (planted canaries found in the output, their exposure, membership inference, closeness of synthetic records to
training records, an audit's lower bound on epsilon) are how a bug would show. The non-DP arm is the positive control:
the same checks on a model trained without DP show what leakage looks like.
"""

from __future__ import annotations

import math

from dpsynth.report import plots
from dpsynth.report.fmt import arm_label, fmt, is_number, model_label, order_arms
from dpsynth.report.inputs import Inputs, as_map
from dpsynth.report.model import Figure, Part, Section, Table, missing, pivot
from dpsynth.report.tables import canary_table, mia_rows

BASELINE_NOTE = (
    "The non-DP arm is a baseline trained on the same data without differential privacy. It is shown only for "
    "comparison (it is what leakage looks like) and is not for release."
)


def build_privacy(inp: Inputs) -> Section:
    parts = (
        []
        if "no_dp" in inp.arms
        else [
            missing(
                "Baseline",
                "this run has no non-DP baseline arm, so the checks below have no positive control to show what "
                "leakage would look like",
            )
        ]
    )
    parts += [
        _canary_part(inp),
        _exposure_part(inp),
        _mia_part(inp),
        _dcr_part(inp),
        _audit_part(inp),
    ]
    other = pivot(inp.index.remaining("privacy"), "Privacy metrics not shown above.")
    if other is not None:
        parts.append(Part(title="Other privacy metrics", tables=[other]))
    return Section(id="privacy", title="Privacy", parts=parts, intro=BASELINE_NOTE if "no_dp" in inp.arms else "")


def _canary_part(inp: Inputs) -> Part:
    title = "Canary leakage"
    raw = inp.tables.get("canary_leakage")
    t = canary_table(raw)
    if t is None:
        if raw is not None:
            return missing(title, "the canary leakage table in metrics.json has no well-formed row")
        if not inp.run.get("canaries"):
            return missing(title, "no canaries were planted in the training data")
        return missing(title, "the canary leakage table is missing from metrics.json")
    inp.index.mark(lambda m: m.name.startswith(("privacy.canary.", "privacy.canary_shape.")))
    rows = []
    for arm in order_arms(list(t.rows)):
        rows.append([arm_label(arm), *(fmt(v) for v in t.rows[arm]), fmt(t.n_synthetic.get(arm))])
    table = Table(
        columns=["arm", *t.columns, "synthetic records"],
        rows=rows,
        numeric=[False, *([True] * (len(t.columns) + 1))],
        caption=(
            f"Number of synthetic records containing each field of any of the {fmt(t.n_canaries)} canaries (fake "
            "records with a name, street, phone number and 6-digit secret) planted once each in the training data, "
            "as in Table 3 of the seed paper. Lower is better; 0 is expected in the DP arm."
        ),
    )
    part = Part(title=title, tables=[table])
    if t.shape_rows:
        shape_rows = [
            [arm_label(arm), *(fmt(v) for v in t.shape_rows[arm]), fmt(t.n_synthetic.get(arm))]
            for arm in order_arms(list(t.shape_rows))
        ]
        if t.shape_base is not None:
            shape_rows.append(["real test split (base rate)", *(fmt(v) for v in t.shape_base[1]), fmt(t.shape_base[0])])
        part.tables.append(
            Table(
                columns=["arm", *t.columns, "records"],
                rows=shape_rows,
                numeric=[False, *([True] * (len(t.columns) + 1))],
                caption="Records containing a field in the canaries' shape with ANY value: 'I am <First> <Last>,', a "
                "street '<3-5 digits> <Name> <street suffix>', a phone '###-###-####', 'My secret code is ######' "
                "(the canary template's own patterns). A model that memorised the canaries' structure writes such "
                "fields with invented values, which the exact count above misses. Compare with the real base rate; "
                "lower is better.",
            )
        )
    return part


def _exposure_part(inp: Inputs) -> Part:
    metrics = inp.index.take(lambda m: m.group == "privacy" and "exposure" in m.name)
    table = pivot(
        metrics,
        "Exposure of the canaries' secrets (Secret Sharer), in bits: about 1.4 for a model that learned nothing about "
        "them, at most the estimate's cap when the true secret beats every sampled candidate. Lower is better.",
    )
    if table is None:
        return missing("Canary exposure", "exposure was not computed (no canaries, or the evaluation skipped it)")
    return Part(title="Canary exposure", tables=[table])


def _mia_part(inp: Inputs) -> Part:
    title = "Membership inference"
    rows = mia_rows(inp.tables.get("mia"))
    if not rows:
        table = pivot(inp.index.take(lambda m: m.group == "privacy" and ".mia." in f".{m.name}."))
        if table is None:
            return missing(title, "no membership-inference attack was run")
        return Part(title=title, tables=[table])
    inp.index.mark(lambda m: m.group == "privacy" and ".mia." in f".{m.name}.")
    table = Table(
        columns=["arm", "attack", "AUC", "TPR at 1% FPR"],
        rows=[[model_label(r["arm"]), r["attack"], fmt(r["auc"]), fmt(r["tpr"])] for r in rows],
        numeric=[False, False, True, True],
        caption="Membership-inference attacks on the trained models: ROC AUC (0.5 = guessing) and the true-positive "
        "rate at a 1% false-positive rate (1% = guessing). Lower is better.",
    )
    part = Part(title=title, tables=[table])
    reference_model = as_map(inp.tables.get("mia")).get("reference_model")
    if reference_model:
        part.paragraphs.append(
            f"The reference attack's reference model (it never saw a private record): {reference_model}."
        )
    g = inp.guarantee
    if g is not None and is_number(g.get("epsilon")) and is_number(g.get("delta")):
        eps, delta = float(g["epsilon"]), float(g["delta"])
        bound = min(1.0, math.exp(min(eps, 700.0)) * 0.01 + delta)
        part.paragraphs.append(
            f"Under ({fmt(eps)}, {fmt(delta)})-DP no attack on the DP arm can exceed TPR = e^ε · FPR + δ = "
            f"{fmt(bound)} at 1% FPR" + (" (vacuous at this ε)." if bound >= 1.0 else ".")
        )
    return part


def _dcr_part(inp: Inputs) -> Part:
    title = "Distance to closest record and verbatim overlap"
    dist = as_map(inp.distributions.get("dcr"))
    svg = plots.histogram(dist, key="dcr", xlabel="cosine distance to the closest training record")
    metrics = inp.index.take(lambda m: m.group == "privacy" and ("dcr" in m.name or "verbatim" in m.name))
    table = pivot(
        metrics,
        "Distance to closest record (DCR) and verbatim word n-gram overlap with the training split, each against "
        "the same quantity for real test records that were never trained on.",
    )
    if svg is None and table is None:
        return missing(title, "neither distances to closest records nor verbatim overlap were measured")
    part = Part(title=title)
    if svg is not None:
        part.figures.append(
            Figure(
                svg,
                "Distance from each record to its nearest training record (embedding cosine distance). The real test "
                "split shows the distance of unseen data. Synthetic records to the LEFT of it (closer to 0) suggest "
                "memorisation; on it or to its right is what privacy asks for (to the right only means text less "
                "like the real data, a fidelity matter). This is the DCR median ratio's direction: below 1 is the "
                "warning sign, 1 or above is fine, so higher is better for privacy up to 1.",
            )
        )
    else:
        part.paragraphs.append("Not measured: the distance distributions are missing from metrics.json.")
    if table is not None:
        part.tables.append(table)
    part.paragraphs += _negative_excess_notes(inp)
    return part


def _negative_excess_notes(inp: Inputs) -> list[str]:
    """What a negative verbatim excess means, with the numbers, so that "minus that share" reads right."""
    excess = {a: v for a, v in inp.index.arms_of("privacy.verbatim.excess").items() if is_number(v) and v < 0}
    if not excess:
        return []
    shown = ", ".join(f"{arm_label(a)} {fmt(excess[a])}" for a in order_arms(list(excess)))
    return [
        f"The verbatim excess is negative ({shown}): real test records, never trained on, share long word "
        "sequences with the training split more often than these synthetic records do (duplicated reviews, "
        "boilerplate). The excess is the synthetic share minus that real share, so anything at or below 0 means no "
        "overlap beyond the base rate; a negative value is not extra privacy."
    ]


def _audit_part(inp: Inputs) -> Part:
    title = "Empirical privacy audit"
    audit = as_map(inp.doc.get("audit"))
    arms = [a for a in order_arms(list(audit)) if isinstance(audit[a], dict)]
    if not arms:
        return missing(title, "no audit was run (an audit trains with planted canaries to lower-bound ε)")
    keys: list[str] = []
    for a in arms:
        keys += [k for k, v in audit[a].items() if k not in keys and (is_number(v) or isinstance(v, str))]
    rows = [[model_label(a), *(fmt(audit[a].get(k)) for k in keys)] for a in arms]
    settings = [f"{k} = {fmt(v)}" for k, v in audit.items() if k not in arms and (is_number(v) or isinstance(v, str))]
    table = Table(
        columns=["arm", *keys],
        rows=rows,
        numeric=[False, *([True] * len(keys))],
        caption="One-run audit (Steinke, Nasr and Jagielski 2023): eps_lb is a statistical lower bound on ε from "
        "guessing which audit canaries were trained on. It must not exceed the claimed ε; far below it is normal.",
    )
    return Part(title=title, tables=[table], items=settings)
