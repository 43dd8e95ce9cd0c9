"""The utility, quality, samples and appendix sections.

Utility answers "can I train on it instead of the real data?" (train on X, test on real), with the DP logistic
regression on real data as the other way to spend the same budget and the majority class as the floor. Quality counts
broken text with its definitions printed beside the numbers. Samples let a reader see the text itself, escaped. The
appendix lists every metric in metrics.json, so nothing measured is ever hidden by the report's choices above.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpsynth.report import plots
from dpsynth.report.fmt import arm_label, better_label, fmt, is_number, order_arms, pct
from dpsynth.report.inputs import Inputs, as_map
from dpsynth.report.model import Figure, Metric, Part, Section, Table, missing, pivot, with_sizes_note
from dpsynth.report.sizes import CAUTION, size_note
from dpsynth.report.tables import quality_rows, utility_accuracy, utility_rows
from dpsynth.rundir import DP_ARMS

MAX_SAMPLES = 5
MAX_SAMPLE_CHARS = 1500


def build_utility(inp: Inputs) -> Section:
    table = inp.tables.get("utility")
    acc, majority = utility_accuracy(table)
    rows = utility_rows(table)
    parts: list[Part] = []
    if not rows:
        parts.append(missing("Train on synthetic, test on real", "the utility table is missing from metrics.json"))
    else:
        inp.index.mark(
            lambda m: m.group == "utility" and (m.name.endswith(".accuracy") or m.name.endswith(".macro_f1"))
        )
        svg = plots.utility_bars(acc, majority, key="utility")
        figures = []
        if svg is not None:
            figures.append(
                Figure(
                    svg,
                    "Accuracy on the real test split of classifiers trained on each source: real training data, DP "
                    "synthetic, non-DP synthetic, and DP logistic regression on real data (same privacy unit). The "
                    "dashed line is the majority-class accuracy (the floor). Higher is better.",
                )
            )
        parts.append(
            Part(title="Train on synthetic, test on real", figures=figures, tables=[_score_table(rows, majority)])
        )
    negative = {
        (m.name, m.arm): m.value
        for m in inp.index.metrics
        if m.name.endswith("feature_importance_spearman") and is_number(m.value) and m.value < 0
    }
    other = pivot(inp.index.remaining("utility"), "Utility metrics not shown above.")
    if other is not None:
        part = Part(title="Other utility metrics", tables=[other])
        if negative:
            shown = ", ".join(f"{arm_label(arm)} {fmt(v)}" for (_, arm), v in negative.items())
            part.paragraphs.append(
                f"feature_importance_spearman is negative ({shown}): the classifier trained on that source relies on "
                "different words than the one trained on real data. Each model's most important terms weigh little "
                "in the other, which over their pooled top terms gives a negative rank correlation; 1 would be the "
                "same words in the same order, 0 unrelated. top_k_overlap in metrics.json is the share they share."
            )
        parts.append(part)
    return Section(id="utility", title="Utility", parts=parts)


def _score_table(rows: list[dict], majority: dict[str, float]) -> Table:
    """The contract's long table (one row per family, task and source) with each task's majority-class floor."""
    keys = list(dict.fromkeys((str(r["family"]), str(r["task"])) for r in rows))
    by = {(str(r["family"]), str(r["task"]), str(r["source"])): r for r in rows}
    out = []
    for family, task in keys:
        for s in order_arms([src for (f, t, src) in by if (f, t) == (family, task)]):
            r = by[(family, task, s)]
            out.append([family, task, arm_label(s), fmt(r.get("accuracy")), fmt(r.get("macro_f1"))])
        if task in majority:
            out.append([family, task, "majority class (floor)", fmt(majority[task]), ""])
    return Table(
        columns=["features", "task", "trained on", "accuracy", "macro-F1"],
        rows=out,
        numeric=[False, False, False, True, True],
        caption="Accuracy and macro-F1 (the mean of per-class F1 over the classes of the real test split) of each "
        "classifier on the real test split, per training source. Higher is better.",
    )


def build_quality(inp: Inputs) -> Section:
    q = quality_rows(inp.tables.get("quality"))
    parts: list[Part] = []
    if q is None:
        parts.append(missing("Text quality", "the quality table is missing from metrics.json"))
    else:
        inp.index.mark(lambda m: m.group == "quality" and any(f".{c}" in m.name for c in q.categories))
        rows = []
        for arm in order_arms(list(q.rows)):
            n, counts, rates = q.rows[arm]
            rows.append([arm_label(arm), fmt(n), *(f"{fmt(counts[c])} ({pct(rates[c])})" for c in q.categories)])
        table = Table(
            columns=["arm", "records", *q.categories],
            rows=rows,
            numeric=[False, *([True] * (len(q.categories) + 1))],
            caption="Records in each category (share in brackets). The real row is the base rate: real reviews also "
            "end abruptly sometimes. Categories other than well_formed may overlap; well_formed is higher-better, "
            "the others lower-better.",
        )
        items = [f"{c}: {q.definitions[c]}" for c in q.categories if q.definitions.get(c)]
        undefined = [c for c in q.categories if not q.definitions.get(c)]
        if undefined:
            items.append("No definition was given for: " + ", ".join(undefined))
        parts.append(Part(title="Text quality", tables=[table], items=items))
    other = pivot(inp.index.remaining("quality"), "Quality metrics not shown above.")
    if other is not None:
        parts.append(Part(title="Other quality metrics", tables=[other]))
    return Section(id="quality", title="Quality", parts=parts)


def build_samples(inp: Inputs) -> Section:
    samples = as_map(inp.doc.get("samples"))
    parts = []
    for arm in order_arms([*samples, "dp", "no_dp"]):
        if arm not in samples:
            reason = "no samples of this arm in metrics.json" if arm in inp.arms else "this run has no such arm"
            parts.append(missing(arm_label(arm), reason))
            continue
        items = [x for x in (_sample(s) for s in samples[arm]) if x] if isinstance(samples[arm], list) else []
        title = arm_label(arm)
        if not items:
            parts.append(missing(title, "no samples of this arm"))
            continue
        pre = []
        for i, (text, codes) in enumerate(items[:MAX_SAMPLES], start=1):
            shown = text if len(text) <= MAX_SAMPLE_CHARS else text[: MAX_SAMPLE_CHARS - 1] + "…"
            heading = f"#{i}" + (" · " + ", ".join(f"{k}: {fmt(v)}" for k, v in codes.items()) if codes else "")
            pre.append((heading, shown))
        paragraph = f"{len(pre)} of {len(items)} samples, as generated"
        if any(codes for _, codes in items):
            paragraph += ", each after the control codes it was generated from, so that you can check they match"
        part = Part(title=title, pre=pre, paragraphs=[paragraph + "."])
        if arm not in DP_ARMS:
            part.warning = (
                "Not differentially private: text from a model trained without DP may reproduce training records. "
                "Do not share this report outside the data owner's trust boundary."
            )
        parts.append(part)
    planted = bool(as_map(inp.run.get("canaries")))
    return Section(
        id="samples",
        title="Samples",
        parts=parts,
        intro="A few synthetic records per arm. They are generated text, never real records"
        + (" (a sample may repeat a canary we planted: those are fake)." if planted else "."),
    )


def _sample(item: Any) -> tuple[str, Mapping[str, Any]] | None:
    """(text, codes) of a sample: metrics.json holds ``{"text", "codes"}`` (older files: the text alone)."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, Mapping) and isinstance(item.get("text"), str):
        return item["text"], as_map(item.get("codes"))
    return None


def build_appendix(inp: Inputs) -> Section:
    metrics = inp.index.metrics
    parts = []
    if metrics:
        rows = [
            [m.group, m.name, arm_label(m.arm), fmt(m.value), better_label(m.better), m.definition, _size_cell(m)]
            for m in metrics
        ]
        parts.append(
            Part(
                title="Every metric",
                tables=[
                    Table(
                        columns=["group", "name", "arm", "value", "better", "definition", "sample"],
                        rows=rows,
                        numeric=[False, False, False, True, False, False, True],
                        caption=with_sizes_note(
                            f"All {len(metrics)} metric values in eval/metrics.json, in its order.", metrics
                        ),
                    )
                ],
            )
        )
    else:
        parts.append(missing("Every metric", "metrics.json lists no metrics"))
    timing = {k: v for k, v in as_map(inp.doc.get("timing_s")).items()}
    if timing:
        parts.append(
            Part(
                title="Evaluation time",
                tables=[
                    Table(
                        columns=["step", "seconds"],
                        rows=[[str(k), fmt(v, 1)] for k, v in timing.items()],
                        numeric=[False, True],
                    )
                ],
            )
        )
    return Section(id="appendix", title="Appendix", parts=parts)


def _size_cell(m: Metric) -> str:
    if m.n is None:
        return ""
    return size_note(m.n, m.n_real) + (f" {CAUTION}" if m.small else "")
