"""``dpsynth frontier``: the command, mounted by :mod:`dpsynth.cli` (imports nothing heavy until it runs)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dpsynth.cli_base import out_console


def frontier(
    out: Annotated[Path, typer.Option("--out", "--run", "-o", help="Frontier directory (created if needed).")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (data set, model, recipe); default: demo data.")
    ] = None,
    eps: Annotated[
        str | None, typer.Option("--eps", help="Privacy levels, comma-separated (default 0,1,4,8,inf).")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A small smoke run (minutes): output shapes and ledger charges only.")
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Config overrides: key.sub=value, e.g. frontier.n_synthetic=500")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """A privacy-utility sweep: eps 0 (the pretrained model, no private data), each DP level (charged to the
    ledger), inf (no DP) and real data at the same size, all scored on the same real test split by the same
    classifiers. Writes DIR/frontier.json, DIR/frontier.md and DIR/frontier.html; a rerun skips finished rows.

    Example: `dpsynth frontier --out runs/frontier --quick`.
    """
    from dpsynth.cli import _guard, _setup_logging
    from dpsynth.config import load_config
    from dpsynth.frontier.config import QUICK_OVERRIDES

    _setup_logging(quiet)
    extra = [*(QUICK_OVERRIDES if quick else ()), *([f"frontier.eps=[{eps}]"] if eps else []), *(overrides or [])]
    cfg = _guard(lambda: load_config(config, extra))
    command = "dpsynth " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    console = out_console()

    def on_row(key: str, entries: list[dict[str, Any]]) -> None:
        best = ", ".join(
            f"{e['label']}/{e['classifier']} {e['accuracy']:.3f}" for e in entries if e["accuracy"] is not None
        )
        console.print(f"row {key}: {best}", highlight=False)

    from dpsynth.frontier.run import run_frontier

    doc = _guard(lambda: run_frontier(cfg, out, command=command, progress=not quiet, on_row=on_row))
    console.print(
        f"frontier of {doc['dataset']} in {doc['seconds_total']:.0f} s (its rows' own: {doc['seconds_rows']:.0f} s):",
        highlight=False,
    )
    for kind, path in doc["paths"].items():
        console.print(f"  {kind}: {path}", highlight=False)
