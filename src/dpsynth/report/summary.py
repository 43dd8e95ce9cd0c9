"""The summary section: the guarantee, the mechanisms that spent it, the ledger entry, and short verdicts.

Why verdicts are computed here and never written by hand: a summary line like "canary leakage: none in the DP arm"
is a claim, so it is derived from the same tables and metrics the later sections show, and it disappears (rather
than defaulting to a reassuring value) when its evidence is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpsynth.report.fidelity_section import collapse_notes
from dpsynth.report.fmt import MISSING, arm_label, arm_short, fmt, is_number, model_label, order_arms, params_text, pct
from dpsynth.report.inputs import Inputs, as_map
from dpsynth.report.model import Part, Section, Table, Verdict, missing
from dpsynth.report.sizes import min_sample, size_note
from dpsynth.report.tables import canary_rows, canary_table, mia_rows, quality_rows, utility_accuracy
from dpsynth.rundir import DP_ARMS

_GUARANTEE_FIELDS = (
    ("epsilon", "ε (epsilon)"),
    ("delta", "δ (delta)"),
    ("accountant", "accountant"),
    ("noise_multiplier", "noise multiplier (DP-SGD)"),
    ("sample_rate", "sample rate (Poisson)"),
    ("steps", "steps"),
    ("max_grad_norm", "max gradient norm (clipping)"),
    ("target_epsilon", "target ε"),
)
_PE_GUARANTEE_FIELDS = (  # Private Evolution (dpsynth.pe): no gradients, T noisy vote histograms on all units
    ("epsilon", "ε (epsilon)"),
    ("delta", "δ (delta)"),
    ("accountant", "accountant"),
    ("noise_multiplier", "noise multiplier (vote histograms, sensitivity 1)"),
    ("iterations", "iterations (vote histograms)"),
    ("variations", "variations per kept record"),
    ("population", "candidates voted on per iteration"),
    ("target_epsilon", "target ε"),
)


def _kv(rows: list[tuple[str, Any]], caption: str = "") -> Table:
    return Table(columns=["", "value"], rows=[[k, fmt(v)] for k, v in rows], numeric=[False, True], caption=caption)


def build_summary(inp: Inputs) -> Section:
    parts = [_release_part(inp), _verdicts_part(inp), _mechanisms_part(inp), _ledger_part(inp)]
    return Section(id="summary", title="Summary", parts=parts)


def _release_part(inp: Inputs) -> Part:
    run, g = inp.run, inp.guarantee
    rows: list[tuple[str, Any]] = [("base model", run.get("model"))]
    unit = (g or {}).get("privacy_unit", run.get("privacy_unit"))
    rows.append(("privacy unit", unit))
    rows.append(("training units", (g or {}).get("training_units", run.get("training_units"))))
    rows.append(("real test records", run.get("n_test_records")))
    n_syn = as_map(run.get("n_synthetic"))
    for arm in order_arms(list(n_syn)):
        rows.append((f"synthetic records: {arm_label(arm)}", n_syn[arm]))
    canaries = as_map(run.get("canaries"))
    if canaries:
        rows.append(("canaries planted", canaries.get("count")))
    part = Part(title="Release", tables=[_kv(rows, "What was trained and generated.")])
    if g is None:
        part.warning = "No differentially private arm in this run: nothing here carries a DP guarantee."
        return part
    fields = _PE_GUARANTEE_FIELDS if g.get("generator") == "pe" else _GUARANTEE_FIELDS
    grows = [(label, g.get(key)) for key, label in fields if key in g]
    part.tables.append(_kv(grows, f"The DP arm's guarantee, from {inp.guarantee_source}."))
    eps, delta = g.get("epsilon"), g.get("delta")
    part.paragraphs.append(
        f"The DP synthetic data set is ({fmt(eps)}, {fmt(delta)})-differentially private with respect to one "
        f"{unit or 'privacy unit'} (all of that unit's records), as computed by the {g.get('accountant', '?')} "
        "accountant over every mechanism listed below. The DP adapter, its synthetic text and anything computed "
        "from them alone keep this guarantee (post-processing). This report does not: its metrics also read the "
        "real data (the test split, training members for the attacks, any baseline trained without DP), so it is not "
        "differentially private. Share it only with people who may see the data; release the DP synthetic text."
    )
    return part


def _verdicts_part(inp: Inputs) -> Part:
    verdicts = [v for v in (_canary_verdict(inp), _exposure_verdict(inp)) if v]
    verdicts += _mia_verdicts(inp)
    verdicts += [v for v in (_audit_verdict(inp), _mauve_verdict(inp)) if v]
    verdicts += _tstr_verdicts(inp)
    if (q := _quality_verdict(inp)) is not None:
        verdicts.append(q)
    verdicts += [Verdict(text, "warn") for text in collapse_notes(inp)]
    if (small := _small_sample_verdict(inp)) is not None:
        verdicts.append(small)
    if not verdicts:
        return missing("Verdicts", "no metrics were found in metrics.json")
    return Part(title="Verdicts", verdicts=verdicts, paragraphs=["Each line is computed from the sections below."])


def _canary_verdict(inp: Inputs) -> Verdict | None:
    table = canary_rows(inp.tables.get("canary_leakage"))
    if table is None:
        return None
    columns, rows = table
    parts = []
    for arm in order_arms(list(rows)):
        counts = rows[arm]
        total = sum(counts)
        if total == 0:
            parts.append(f"none in the {arm_short(arm)} arm")
        else:
            detail = ", ".join(f"{c} {n}" for c, n in zip(columns, counts, strict=True) if n)
            parts.append(f"{total} field matches in the {arm_short(arm)} arm ({detail})")
    dp = rows.get("dp")
    status = "info" if dp is None else ("ok" if sum(dp) == 0 else "bad")
    t = canary_table(inp.tables.get("canary_leakage"))
    shaped = {a: sum(r) for a, r in (t.shape_rows if t is not None else {}).items()}
    if shaped:
        text = " / ".join(f"{n} in the {arm_short(a)} arm" for a, n in ((a, shaped[a]) for a in order_arms(shaped)))
        parts.append(f"canary-shaped fields with any value: {text}")
        if status == "ok" and shaped.get("dp"):
            status = "warn"
    return Verdict("Canary leakage: " + " / ".join(parts), status)


def _exposure_verdict(inp: Inputs) -> Verdict | None:
    values = inp.index.arms_of("privacy.exposure.mean")
    if not any(is_number(v) for v in values.values()):
        return None
    text = " / ".join(f"{arm_label(a)} {fmt(values[a])}" for a in order_arms(list(values)))
    return Verdict(f"Mean canary exposure (bits; ~1.4 means nothing memorised): {text}")


def _mia_verdicts(inp: Inputs) -> list[Verdict]:
    rows = mia_rows(inp.tables.get("mia"))
    best: dict[str, float] = {}
    for row in rows:
        if is_number(row["auc"]):
            best[row["arm"]] = max(best.get(row["arm"], 0.0), float(row["auc"]))
    if not best:
        return []
    text = " / ".join(f"{model_label(a)} {fmt(best[a])}" for a in order_arms(list(best)))
    return [Verdict(f"Membership inference, strongest attack's AUC (0.5 = guessing): {text}")]


def _audit_verdict(inp: Inputs) -> Verdict | None:
    audit = as_map(inp.doc.get("audit"))
    dp = as_map(audit.get("dp"))
    lb = dp.get("eps_lb")
    if not is_number(lb):
        return None
    claimed = dp.get("epsilon", (inp.guarantee or {}).get("epsilon"))
    if not is_number(claimed):
        return Verdict(f"Empirical ε lower bound of the DP arm: {fmt(lb)}")
    ok = lb <= claimed
    if ok:
        return Verdict(f"Empirical ε lower bound (audit) {fmt(lb)} ≤ claimed ε {fmt(claimed)}: consistent", "ok")
    return Verdict(
        f"Empirical ε lower bound (audit) {fmt(lb)} EXCEEDS the claimed ε {fmt(claimed)}: the guarantee is "
        "contradicted, a bug in training or accounting is likely",
        "bad",
    )


def _mauve_verdict(inp: Inputs) -> Verdict | None:
    found = {a: m for a, m in inp.index.metrics_of("fidelity.mauve").items() if is_number(m.value)}
    if not found:
        return None
    text = " vs ".join(f"{arm_label(a)} {found[a].shown()}" for a in order_arms(list(found)))
    small = [a for a, m in found.items() if m.small]
    if not small:
        return Verdict(f"MAUVE (1 = indistinguishable from real, higher is better): {text}")
    return Verdict(
        f"MAUVE (1 = indistinguishable from real, higher is better): {text}. Too few records to mean anything "
        f"(MAUVE needs {min_sample('fidelity.mauve')} or more per side): do not read these values as a result",
        "warn",
    )


def _tstr_verdicts(inp: Inputs) -> list[Verdict]:
    acc, majority = utility_accuracy(inp.tables.get("utility"))
    out = []
    for (family, task), by_source in acc.items():
        dp_arm = next((a for a in DP_ARMS if a in by_source), None)
        if dp_arm is None:
            continue
        shown = [s for s in order_arms(list(by_source)) if s in (*DP_ARMS, "real", "no_dp")]
        text = " vs ".join(f"{arm_label(s)} {fmt(by_source[s])}" for s in shown)
        base = f"; majority class {fmt(majority[task])}" if task in majority else ""
        m = inp.index.metrics_of(f"utility.{family}.{task}.accuracy").get(dp_arm)
        if m is None or m.n is None:
            out.append(Verdict(f"TSTR accuracy ({family}, {task}): {text}{base}"))
        elif not m.small:
            out.append(Verdict(f"TSTR accuracy ({family}, {task}; {m.n:,} real test records): {text}{base}"))
        else:
            out.append(
                Verdict(
                    f"TSTR accuracy ({family}, {task}; {m.n:,} real test records): {text}{base}. Too few test "
                    f"records to mean anything (fewer than {min_sample(m.name)})",
                    "warn",
                )
            )
    return out


def _small_sample_verdict(inp: Inputs) -> Verdict | None:
    """One caution listing the metrics whose samples are below their thresholds (:mod:`dpsynth.report.sizes`)."""
    small = [m for m in inp.index.metrics if m.small and m.n is not None]
    if not small:
        return None
    smallest: dict[str, str] = {}
    for m in small:
        family = m.name.rsplit(".", 1)[0] if m.name.startswith("utility.") else m.name
        smallest.setdefault(family, size_note(m.n or 0, m.n_real))
    listed = ", ".join(f"{k} ({v})" for k, v in list(smallest.items())[:6])
    more = f" and {len(smallest) - 6} more" if len(smallest) > 6 else ""
    return Verdict(
        f"Small samples: {len(small)} metric values rest on fewer records than they need to mean anything, e.g. "
        f"{listed}{more}. Generate and evaluate more records (generate.num_records, evaluate.max_records) before "
        "reading them; they are marked ⚠ below.",
        "warn",
    )


def _quality_verdict(inp: Inputs) -> Verdict | None:
    table = quality_rows(inp.tables.get("quality"))
    if table is None or "well_formed" not in table.categories:
        return None
    text = " / ".join(f"{arm_label(arm)} {pct(rates.get('well_formed'))}" for arm, (_, _, rates) in table.rows.items())
    return Verdict(f"Well-formed records: {text}")


def _mechanisms_part(inp: Inputs) -> Part:
    g = inp.guarantee
    mechs = g.get("mechanisms") if g is not None else None
    if not isinstance(mechs, list) or not mechs:
        return missing("Mechanisms", "no DP arm" if g is None else "the guarantee lists no mechanisms")
    by_mech = as_map(g.get("epsilon_by_mechanism")) if g is not None else {}
    rows = []
    for m in (as_map(x) for x in mechs):
        row = [str(m.get("name", "?")), fmt(m.get("noise_multiplier")), fmt(m.get("sample_rate")), fmt(m.get("steps"))]
        row += [params_text(m.get("params"))]
        if by_mech:
            row.append(fmt(by_mech.get(str(m.get("name")))))
        rows.append(row)
    columns = ["mechanism", "noise multiplier", "sample rate", "steps", "parameters"]
    if by_mech:
        columns.append("ε alone")
    return Part(
        title="Mechanisms",
        tables=[
            Table(
                columns=columns,
                rows=rows,
                numeric=[False, True, True, True, False, True][: len(columns)],
                caption="Every mechanism that touched the private data in this release; ε above composes all of "
                "them (ε alone: each one by itself, for orientation only).",
            )
        ],
    )


def _ledger_part(inp: Inputs) -> Part:
    entry = inp.ledger
    if entry is None:
        reason = "no DP arm" if inp.guarantee is None else "the release was not recorded in a privacy ledger"
        return missing("Ledger entry", reason)
    budget = as_map(entry.get("budget"))
    rows: list[tuple[str, Any]] = [
        ("entry", entry.get("entry", entry.get("id"))),
        ("status", entry.get("status")),
        ("source fingerprint", entry.get("source")),
        ("ε of all this source's releases, composed", entry.get("composed_epsilon")),
        ("δ of that composition", entry.get("composed_delta")),
        ("releases of this source", entry.get("releases_of_source")),
        ("source budget", f"ε {fmt(budget.get('epsilon'))}, δ {fmt(budget.get('delta'))}" if budget else "none set"),
        ("ledger file", entry.get("path")),
    ]
    before = as_map(entry.get("charged_before"))
    if before:  # e.g. the length bound of data.max_tokens=auto, charged when it was drawn
        rows.append(
            (
                "charged before, as entries of their own",
                ", ".join(f"{name} #{eid}" for name, eid in before.items())
                + " (this entry's own ε leaves them out; the composed ε above counts them)",
            )
        )
    known = {
        "entry",
        "id",
        "status",
        "source",
        "composed_epsilon",
        "composed_delta",
        "releases_of_source",
        "budget",
        "charged_before",
    }
    extra = [(k, v) for k, v in entry.items() if k not in known | {"path"}]
    rows += [(k, str(v) if isinstance(v, (Mapping, list)) else v) for k, v in extra]
    rows = [(k, v) for k, v in rows if v is not None and v != MISSING]
    part = Part(title="Ledger entry", tables=[_kv(rows, "The release's entry in the privacy ledger.")])
    if entry.get("status") != "committed":
        part.warning = f"The ledger entry is {entry.get('status', 'of unknown status')}, not committed."
    return part
