"""The frontier's three outputs: ``frontier.json`` (the contract), ``frontier.md`` (the table) and ``frontier.html``.

``frontier.json``: ``dataset``, ``generator``, ``n_private``, ``n_synthetic``, ``command``, ``date`` and ``rows``, one
object per (eps, label, classifier) with at least ``eps`` (a number, ``"inf"`` or ``"real"``), ``label``,
``classifier``, ``accuracy``, ``macro_f1``, ``mauve``, ``code_agreement`` and ``seconds``; ``mauve`` is the mean over
``mauve_repeats`` draws, ``mauve_sd`` their standard deviation (null for one draw); ``mauve_bounded`` (and its
``mauve_bounded_sd``) the same with every text on both sides cut to the length budget ``length_bound`` names
(:mod:`dpsynth.frontier.metrics`: a length-matched figure; null in scores made before it existed). With
``frontier.draws`` above 1 (``draws`` at the top and in each generated row's objects), ``accuracy``, ``macro_f1``,
``mauve``, ``mauve_bounded``, ``code_agreement`` and ``well_formed`` are means over the draws, each draw's value in
``<key>_draws``, and ``mauve_sd`` is the repeats' spread averaged over the draws. ``seconds_total`` and
``peak_rss_gib`` are the invocation's time and its process's peak resident set
(:func:`dpsynth.machine.peak_resident_gib`; absent in sweeps made before 2026-12-07; a rerun that keeps every row
records only its scoring's), ``seconds_rows`` the rows' own.

The HTML page is self-contained like the run report: one inline SVG per label (accuracy of each classifier and MAUVE
against the privacy level, with the eps = 0 and real rows as horizontal reference lines), no script, no request.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from dpsynth.rundir import RunDir, write_json, write_text

_ORDER = {"eps": 0, "real": 1}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _accuracy_cell(row: dict[str, Any]) -> str:
    """Accuracy, with its binomial standard error over the row's ``n_test`` real test records: how finely the test
    split can tell two rows (or a row and a target) apart. It leaves out the spread that training brings (another DP
    training, another draw of records), which only repeated rows show.

    >>> _accuracy_cell({"accuracy": 0.5, "n_test": 400}), _accuracy_cell({"accuracy": 0.5, "n_test": None})
    ('0.500 ± 0.025', '0.500')
    """
    acc, n = row.get("accuracy"), row.get("n_test")
    if acc is None or not n:
        return _fmt(acc)
    return f"{_fmt(acc)} ± {_fmt((acc * (1 - acc) / n) ** 0.5)}" + _draws(row, "accuracy")


def _draws(row: dict[str, Any], key: str) -> str:
    """Each draw's figure, after the mean, when a row was scored over several draws (``frontier.draws``).

    >>> _draws({"mauve_draws": [0.621, 0.538]}, "mauve"), _draws({"mauve": 0.6}, "mauve")
    (' (draws 0.621, 0.538)', '')
    """
    values = row.get(f"{key}_draws")
    if not values or len(values) < 2:
        return ""
    return " (draws " + ", ".join(_fmt(None if v is None else float(v)) for v in values) + ")"


def _mauve_cell(row: dict[str, Any], key: str = "mauve") -> str:
    """MAUVE (``key``: ``mauve`` or ``mauve_bounded``), with its standard deviation over draws when there were several.

    >>> _mauve_cell({"mauve": 0.4351, "mauve_sd": 0.0224}), _mauve_cell({"mauve": 0.4, "mauve_sd": None})
    ('0.435 ± 0.022', '0.400')
    >>> _mauve_cell({"mauve": 0.4}, "mauve_bounded")
    '-'
    """
    if row.get(f"{key}_draws") and len(row[f"{key}_draws"]) > 1:
        return _fmt(row.get(key)) + _draws(row, key)  # the spread that matters is the draws' (frontier.draws)
    if row.get(f"{key}_sd") is None:
        return _fmt(row.get(key))
    return f"{_fmt(row[key])} ± {_fmt(row[f'{key}_sd'])}"


def _bound_note(doc: dict[str, Any]) -> str:
    """What the length-matched MAUVE column cut, or nothing for a sweep scored before it existed.

    >>> _bound_note({"length_bound": {"tokens": 64, "cut": "sentence"}})[:62]
    ' MAUVE at the bound: the same, with every text on both sides c'
    >>> _bound_note({})
    ''
    """
    bound = doc.get("length_bound")
    if not bound:
        return ""
    rule = "after its last whole sentence that fits" if bound["cut"] == "sentence" else "at the bound"
    synthetic = (
        "synthetic records longer than it (rows whose released bound is longer) and long real reviews lose their tail"
        if doc.get("row_length_bounds")
        else "synthetic records never exceed it, long real reviews lose their tail"
    )
    return (
        f" MAUVE at the bound: the same, with every text on both sides cut to {bound['tokens']} tokens "
        f"(generate.max_new_tokens; cut {rule}, as training cuts responses): {synthetic}, so it compares content at "
        "one length, which the first MAUVE mixes with length."
    )


_LENGTH_MODES = {
    "dp": "released with DP at the row's epsilon and charged with it",
    "exact": "read exactly: the row is not released",
    "public": "public: data.max_tokens_public, no private data read",
}


def _length_lines(doc: dict[str, Any]) -> list[str]:
    """With data.max_tokens=auto, each row's length bound (its training cut and generation budget) and how it was read.

    >>> _length_lines({"row_length_bounds": {"eps0": {"mode": "public", "max_tokens": 64}}})[0][:58]
    '- length bound (data.max_tokens=auto, dpsynth.privacy.leng'
    >>> _length_lines({})
    []
    """
    bounds = doc.get("row_length_bounds")
    if not bounds:
        return []
    parts = [f"{key} {b['max_tokens']} ({_LENGTH_MODES.get(b['mode'], b['mode'])})" for key, b in bounds.items()]
    return [
        "- length bound (data.max_tokens=auto, dpsynth.privacy.length), each row's training cut and generation "
        "budget, in tokens: " + "; ".join(parts)
    ]


def _mauve_note(rows: Sequence[dict[str, Any]], n_synthetic: int, n_test: int) -> str:
    """How MAUVE was drawn, with the records a side of each draw: MAUVE clusters into n / 10 buckets, so the same
    texts score lower against more records (finer buckets), and only figures at the same n compare. The size is
    each row's ``mauve_n`` (the smaller of its records and the test split); entries scored before it was recorded
    read as ``min(n_synthetic, n_test)``.

    >>> note = _mauve_note([{"mauve": 0.5, "mauve_repeats": 5, "mauve_n": 974, "row": "eps4"}], 1000, 974)
    >>> note.endswith("5 draws of 974 records a side (97 k-means buckets: compare MAUVE only at the same size).")
    True
    >>> rows = [{"mauve": 0.5, "mauve_n": 200, "row": "eps4"}, {"mauve": 0.9, "mauve_n": 500, "row": "real_all"}]
    >>> _mauve_note(rows, 200, 500).endswith("200 records a side (20 k-means buckets: compare MAUVE only at the "
    ...                                       "same size); real_all: 500 a side (50 buckets).")
    True
    >>> _mauve_note([{"mauve": None}], 200, 0)
    'MAUVE: not measured.'
    """
    measured = [r for r in rows if r.get("mauve") is not None]
    if not measured:
        return "MAUVE: not measured."
    sizes = {str(r.get("row")): int(r.get("mauve_n") or min(n_synthetic, n_test)) for r in measured}
    n = max(set(sizes.values()), key=list(sizes.values()).count)  # the common size; rows that differ are named
    repeats = max(r.get("mauve_repeats") or 1 for r in measured)
    draws = "one draw" if repeats == 1 else f"mean ± standard deviation over {repeats} draws"
    others = "".join(f"; {row}: {m} a side ({max(2, m // 10)} buckets)" for row, m in sizes.items() if m != n)
    return (
        f"MAUVE: against the real test split, {draws} of {n} records a side ({max(2, n // 10)} k-means buckets: "
        f"compare MAUVE only at the same size){others}."
    )


def _eps_label(row: dict[str, Any]) -> str:
    eps = row["eps"]
    if eps == "real":
        return f"real (n={row['n_train']})"
    if eps == "inf":
        return "inf (no DP)"
    return f"{float(eps):g}"


def markdown(doc: dict[str, Any]) -> str:
    """The table, one line per row, grouped by label and classifier."""
    lines = [
        f"# Privacy-utility frontier: {doc['dataset']}",
        "",
        f"- command: `{doc['command']}`",
        f"- date: {doc['date']}; machine: {doc.get('machine') or 'not recorded'}; generator: {doc['generator']}; "
        f"model: {doc['model']}",
        f"- private training units: {doc['n_private']}; synthetic records per row: {doc['n_synthetic']}"
        + (f" in each of {doc['draws']} draws" if doc.get("draws", 1) > 1 else "")
        + f"; real test records: {doc['n_test']}",
        *(
            [
                f"- draws (frontier.draws): every generated row wrote {doc['draws']} independent sets of "
                f"{doc['n_synthetic']} records from its one trained model and code release, each scored on its own; "
                "accuracy, macro-F1, both MAUVEs, code agreement and the well-formed share are their mean, with each "
                "draw's accuracy and MAUVE in brackets: the sampling's spread, which a single draw's error bars leave "
                "out (not the spread between trainings or DP noise draws, which only another training shows). n "
                "train is the first draw's; DP-LR runs once. Real rows are one draw."
            ]
            if doc.get("draws", 1) > 1
            else []
        ),
        *(
            [
                f"- time: the rows' own {doc['seconds_rows'] / 60:.0f} min (training and generation when made, where "
                f"recorded, and their latest scoring); "
                f"this run of the command {doc['seconds_total'] / 60:.0f} min"
                + (
                    f", its process's peak resident set {doc['peak_rss_gib']:.1f} GiB"
                    if doc.get("peak_rss_gib") is not None
                    else ""
                )
            ]
            if doc.get("seconds_rows") is not None and doc.get("seconds_total") is not None
            else []
        ),
        (
            f"- every fine-tuned row starts from the public warm start {doc['init_adapter']} (train.init_adapter, "
            "fitted without DP to public data); eps 0: that model prompted with codes drawn from their public domain "
            "(no private data); "
            if doc.get("init_adapter")
            else "- eps 0: the pretrained model prompted with codes drawn from their public domain (no private data); "
        )
        + (
            f"the model holds a warm start merged into its weights, {doc['merged_warm_start'].get('adapter')} "
            "(its folder's dpsynth_warm_start.json; fitted without DP, declared public); "
            if doc.get("merged_warm_start")
            else ""
        )
        + (
            "eps > 0: Private Evolution at that epsilon (the same model, no training); "
            if doc["generator"] == "pe"
            else "eps > 0: DP fine-tuning at that epsilon; inf: the same fine-tuning without DP, in its own batches, "
            "at its own learning rate and on its own LoRA modules when train.no_dp_batch_size, "
            "train.no_dp_learning_rate and train.no_dp_target_modules are set (not releasable); "
        )
        + "real: real training records.",
        *(
            [
                f"- best-of-{doc['candidates']}: every generated row sampled {doc['candidates']} texts per code and "
                f"kept the one preferred by {', '.join(doc.get('select_by', []))} (generate.candidates, "
                "generate.select_by: public rules and model, no privacy cost); well-formed share and code agreement "
                "are measured on the kept texts."
            ]
            if doc.get("candidates", 1) > 1
            else []
        ),
        *_length_lines(doc),
        "- accuracy (± its binomial standard error over the test records) and macro-F1: a classifier trained on the "
        "row's records, tested on the real test split. "
        "code agreement: share of synthetic records that a classifier trained on real data labels as their code. "
        "DP-LR: DP logistic regression trained on the real training split at the row's epsilon. "
        + _mauve_note(doc["rows"], doc["n_synthetic"], doc["n_test"])
        + _bound_note(doc),
        "- These metrics read the private data (test split, training split): the table is not DP.",
        "",
    ]
    header = (
        "| label | classifier | eps | n train | accuracy | macro-F1 | majority | MAUVE | MAUVE at the bound | "
        "code agreement | well-formed | DP-LR acc | seconds |"
    )
    for label in dict.fromkeys(r["label"] for r in doc["rows"]):
        lines += [f"## {label}", "", header, "|" + "---|" * 13]
        for r in doc["rows"]:
            if r["label"] != label:
                continue
            lines.append(
                f"| {label} | {r['classifier']} | {_eps_label(r)} | {r['n_train']} | {_accuracy_cell(r)} | "
                f"{_fmt(r['macro_f1'])} | {_fmt(r['majority_accuracy'])} | {_mauve_cell(r)} | "
                f"{_mauve_cell(r, 'mauve_bounded')} | "
                f"{_fmt(r['code_agreement'])} | {_fmt(r['well_formed'], 2)} | {_fmt(r['dp_logreg_accuracy'])} | "
                f"{_fmt(r['seconds'], 0)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _plot(rows: Sequence[dict[str, Any]], label: str, key: str) -> str:
    """Accuracy per classifier and MAUVE against the privacy level, eps = 0 and real as reference lines (SVG)."""
    from matplotlib.figure import Figure

    from dpsynth.report.plots import figure_style, svg_markup

    levels = [r for r in rows if r["label"] == label and r["eps"] not in ("real", 0, 0.0)]
    xs = list(dict.fromkeys(str(_eps_label(r)) for r in levels))
    with figure_style(key):
        fig = Figure(figsize=(6.4, 3.4))
        ax = fig.add_subplot()
        colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
        for i, family in enumerate(dict.fromkeys(r["classifier"] for r in rows if r["label"] == label)):
            mine = [r for r in levels if r["classifier"] == family and r["accuracy"] is not None]
            color = colors[i % len(colors)]
            xy = [(xs.index(_eps_label(r)), r["accuracy"]) for r in mine]
            if xy:
                ax.plot(*zip(*xy, strict=True), "o-", color=color, label=f"{family} accuracy")
            for ref, style in ((0.0, ":"), ("real", "--")):
                refs = [r for r in rows if r["label"] == label and r["classifier"] == family and r["eps"] == ref]
                if refs and refs[0]["accuracy"] is not None:
                    name = "eps 0" if ref == 0.0 else f"real n={refs[0]['n_train']}"
                    ax.axhline(refs[0]["accuracy"], linestyle=style, color=color, alpha=0.7, label=f"{family}: {name}")
        mauve = {_eps_label(r): r["mauve"] for r in levels if r["mauve"] is not None}
        if mauve:
            ax.plot([xs.index(k) for k in mauve], list(mauve.values()), "s--", color="#7f7f7f", label="MAUVE")
        bounded = {_eps_label(r): r["mauve_bounded"] for r in levels if r.get("mauve_bounded") is not None}
        if bounded:
            ax.plot(
                [xs.index(k) for k in bounded],
                list(bounded.values()),
                "^:",
                color="#9467bd",
                label="MAUVE at the bound",
            )
        ax.set_xticks(range(len(xs)), xs)
        ax.set_xlabel("privacy level (epsilon)")
        ax.set_ylabel("accuracy / MAUVE")
        ax.set_ylim(0, 1)
        ax.set_title(label)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.subplots_adjust(right=0.62)
        return str(svg_markup(fig, key))


def html_page(doc: dict[str, Any], table_md: str) -> str:
    """A self-contained page: the plots, then the table (as HTML)."""
    labels = list(dict.fromkeys(r["label"] for r in doc["rows"]))
    plots = "\n".join(
        f"<figure>{_plot(doc['rows'], label, f'frontier-{i}')}<figcaption>{html.escape(label)}: accuracy of each "
        "classifier and MAUVE by privacy level; dotted: eps 0 (no private data); dashed: real data at the same n"
        "</figcaption></figure>"
        for i, label in enumerate(labels)
    )
    rows_html = []
    for line in table_md.splitlines():
        if line.startswith("| label") or line.startswith("|---"):
            continue
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            rows_html.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = (
        "label",
        "classifier",
        "eps",
        "n train",
        "accuracy",
        "macro-F1",
        "majority",
        "MAUVE",
        "MAUVE at the bound",
        "code agreement",
        "well-formed",
        "DP-LR acc",
        "seconds",
    )
    notes = "".join(f"<li>{html.escape(line[2:])}</li>" for line in table_md.splitlines() if line.startswith("- "))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dpsynth frontier: {html.escape(str(doc["dataset"]))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;
font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}figure{{margin:1em 0}}</style>
</head><body><h1>Privacy-utility frontier: {html.escape(str(doc["dataset"]))}</h1><ul>{notes}</ul>
{plots}
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead><tbody>{"".join(rows_html)}</tbody></table>
</body></html>
"""


def write_outputs(root: RunDir, doc: dict[str, Any]) -> dict[str, str]:
    """Write the three files atomically; returns their paths."""
    paths = {k: root.root / f"frontier.{k}" for k in ("json", "md", "html")}
    table = markdown(doc)
    write_json(paths["json"], doc)
    write_text(paths["md"], table + "\n")
    write_text(paths["html"], html_page(doc, table))
    return {k: str(p) for k, p in paths.items()}
