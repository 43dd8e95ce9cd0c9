"""The summaries the command line prints when a stage ends: counts, privacy parameters and metrics, never record text.

Each takes what the stage's API function returned (:mod:`dpsynth.api`) and prints to the results console (stdout, see
:mod:`dpsynth.cli_base`), so ``dpsynth run`` can show each stage's summary as soon as that stage ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from dpsynth.cli_base import out_console
from dpsynth.rundir import DP_ARMS, SYNTHETIC_ARMS, RunDir

# Why prepare dropped a record, by the reason names of dpsynth.data (clean, schemas, units, prepare), with the setting
# that decides it; {key}s are filled from prepare.json. A reason not listed here is printed by its name.
DROP_REASONS = {
    "over_user_bound": "over the per-user bound (data.max_records_per_user={max_records_per_user}; "
    "which of a user's records are kept is drawn at random)",
    "beyond_max_records": "beyond the first data.max_records={max_records} usable records",
    "too_short": "too short (under data.min_chars={min_chars} characters after cleaning)",
    "too_long": "too long (over data.max_chars={max_chars} characters after cleaning)",
    "duplicate": "duplicates of an earlier text (data.dedup)",
    "near_duplicate": "near-duplicates of an earlier text: the same words up to case and punctuation (data.dedup)",
    "empty": "empty after cleaning",
    "incomplete": "a required field missing or empty",
    "code_out_of_domain": "a control code outside its public domain (data.code_domains)",
    "no_metadata": "no product metadata for the item (data.meta_path)",
    "no_user": "no user id (data.privacy_unit=user needs one)",
}


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def drop_lines(info: dict[str, Any]) -> list[str]:
    """What ``prepare`` dropped and why, from prepare.json: a headline and one line per reason, largest first.

    >>> drop_lines({"counts": {"read": 400, "dropped": {"over_user_bound": 230}}, "max_records_per_user": 1})[0]
    'dropped 230 of 400 records read:'
    """
    counts = info.get("counts", {})
    dropped: dict[str, int] = counts.get("dropped", {})
    total = sum(dropped.values())
    if not total:
        return [f"dropped none of {counts.get('read', '?')} records read"]
    lines = [f"dropped {total} of {counts.get('read', '?')} records read:"]
    for reason, n in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {n} {DROP_REASONS.get(reason, reason).format_map(_Keep(info))}")
    return lines


def print_prepare(info: dict[str, Any]) -> None:
    counts = info.get("counts", {})
    console = out_console()
    canaries = counts.get("canaries", 0)
    console.print(
        f"prepared: {counts.get('train_records', '?')} training records ({counts.get('train_units', '?')} units)"
        + (f" + {canaries} planted canaries" if canaries else "")
        + f", {counts.get('test_records', '?')} test records; privacy unit: {info.get('privacy_unit')}",
        highlight=False,
    )
    for line in drop_lines(info):
        console.print(line, highlight=False)
    length = info.get("length_release")
    if length is not None:  # data.max_tokens=auto (dpsynth.train.length)
        entry = length.get("ledger") or {}
        charged = (
            f"ledger entry #{entry['entry']}, part of the DP arm's target epsilon"
            if entry
            else "not recorded: ledger.enabled=false"
        )
        how = {
            "dp": f"released with DP (sigma {length.get('sigma', 0):.1f}; {charged})",
            "exact": "read exactly (no DP arm: nothing released)",
            "public": "public (data.max_tokens_public)",
        }.get(length["mode"], length["mode"])
        console.print(f"length bound: {length['max_tokens']} tokens, {how}", highlight=False)


def print_training(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="Training", show_lines=False)
    for col in ("arm", "DP", "epsilon", "delta", "noise", "sample rate", "steps", "accountant"):
        table.add_column(col)
    for arm, p in results.items():
        if p.get("dp"):
            table.add_row(
                arm,
                "yes",
                f"{p['epsilon']:.3f}",
                f"{p['delta']:.2g}",
                f"{p['noise_multiplier']:.3f}",
                f"{p['sample_rate']:.4f}",
                str(p["steps"]),
                p["accountant"],
            )
        else:
            table.add_row(arm, "no (baseline)", "inf", "-", "-", "-", str(p.get("steps", "-")), "-")
    out_console().print(table)


def print_generated(results: dict[str, dict[str, Any]]) -> None:
    console = out_console()
    for arm, summary in results.items():
        console.print(f"generated {arm}: {summary['records']} records -> {summary['path']}", highlight=False)


def print_evaluation(doc: dict[str, Any], out: Path) -> None:
    """A few headline metrics per arm (numbers only: never a record's text)."""
    from dpsynth.evaluate.run import headline_rows

    arms, rows = headline_rows(doc)
    table = Table(title="Evaluation (headline metrics; every metric in eval/metrics.json)")
    for col in ("metric", *arms):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console = out_console()
    console.print(table)
    console.print(
        f"evaluated in {doc['timing_s'].get('total', 0):.0f} s -> {RunDir(out).metrics_json}", highlight=False
    )


def print_audit(result: dict[str, Any]) -> None:
    table = Table(title=f"One-run audit: m={result['m']} canaries, {1 - result['significance']:.0%} confidence")
    for col in ("arm", "eps_lb", "epsilon", "correct / guesses", "check"):
        table.add_column(col)
    checks = result["checks"]
    for arm, r in result["arms"].items():
        eps = "inf (no DP)" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
        if arm == "dp":
            check = "eps_lb <= epsilon" if checks["dp_eps_lb_le_epsilon"] else "[bold red]VIOLATED: eps_lb > epsilon[/]"
        else:
            check = "detects membership" if checks["no_dp_eps_lb_above_zero"] else "[yellow]no power (eps_lb 0)[/]"
        table.add_row(arm, f"{r['eps_lb']:.3f}", eps, f"{r['correct']} / {r['guesses']}", check)
    console = out_console()
    console.print(table)
    console.print(f"delta {result['delta']:.2g}; details in audit/audit.json", highlight=False)


def print_outputs(out: Path) -> None:
    """The last lines of ``dpsynth run``: where the report and the synthetic data are (those that exist)."""
    run = RunDir(out)
    console = out_console()
    if run.report_html.is_file():
        console.print(f"report: {run.report_html}", highlight=False)
    for arm in SYNTHETIC_ARMS:
        if run.generated(arm).is_file():
            note = "DP synthetic data" if arm in DP_ARMS else "non-DP baseline, not private: do not release"
            console.print(f"synthetic {arm}: {run.generated(arm)} ({note})", highlight=False)
