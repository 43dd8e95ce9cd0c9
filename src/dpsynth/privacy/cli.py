"""``dpsynth budget``: look at and set the privacy budgets in the ledger.

The main CLI mounts :data:`budget_app` (``app.add_typer(budget_app, name="budget")``). Every number shown comes from
the ledger's stored mechanisms through :mod:`dpsynth.privacy.accounting`; nothing here computes epsilon itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dpsynth.errors import DPSynthError
from dpsynth.privacy.accounting import ACCOUNTANTS, AccountantName, Mechanism
from dpsynth.privacy.ledger import Ledger, Release, default_ledger_path

budget_app = typer.Typer(
    name="budget",
    help="Privacy budgets and the releases that spent them (the ledger).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LedgerOpt = Annotated[
    Path | None,
    typer.Option("--ledger", help="Ledger file (default: $DPSYNTH_LEDGER, else the user data directory)."),
]


def _fail(err: Exception, code: int = 2) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {err}", highlight=False)
    return typer.Exit(getattr(err, "exit_code", code))


def _describe(m: Mechanism) -> str:
    """What ran and its parameters (numbers only, nothing private): the name, then short ``key=value`` lines.

    Short lines because an 80-column terminal folds a long cell mid-word and mid-number.
    """
    extra = [f"{k}={v}" for k, v in sorted(m.params.items())]
    return "\n".join([m.name, f"σ={m.noise_multiplier:.4g}", f"q={m.sample_rate:.4g}", f"steps={m.steps}", *extra])


def _when(stamp: str) -> str:
    """``2026-11-30T14:29:32+00:00`` as ``2026-11-30`` and ``14:29:32`` on two lines (the ledger stores UTC)."""
    return stamp.replace("T", "\n").split("+")[0]


def _composed(
    ledger: Ledger, source: str, rels: list[Release], accountant: AccountantName
) -> tuple[float, float, float]:
    """(delta, composed epsilon of committed releases, composed epsilon with pending reservations).

    At the budget's delta; without a budget at the smallest delta among the releases (the conservative choice, as the
    ledger makes it).
    """
    budget = ledger.get_budget(source)
    delta = budget.delta if budget is not None else min((r.delta for r in rels), default=1e-5)
    spent = ledger.spent(source, delta, accountant)
    reserved = ledger.spent(source, delta, accountant, include_pending=True)
    return delta, spent, reserved


def _show_source(console: Console, ledger: Ledger, source: str, accountant: AccountantName | None) -> None:
    rels = ledger.releases(source, include_pending=True)
    acc: AccountantName = accountant or (rels[-1].accountant if rels else "prv")
    table = Table(title=f"source {source}", show_lines=True)
    table.add_column("#", no_wrap=True)
    table.add_column("status", no_wrap=True)
    # Fold, never cut (a truncated number would mislead). On a narrow terminal rich does not shrink these columns
    # enough by itself and crops the table's right edge, so they get explicit widths there (a mechanism's lines whole).
    narrow = console.width < 100
    for col, width in (
        ("run / arm / when (UTC)", 12),
        ("mechanisms", 18),
        ("ε (δ), accountant", 10),
        ("composed ε (δ)", 9),
    ):
        table.add_column(
            col, overflow="fold", max_width=width if narrow else None, min_width=18 if width == 18 else None
        )
    for r in rels:
        status = "[yellow]PENDING[/yellow]\n(reserved,\nnot released)" if r.pending else "committed"
        composed = "" if r.composed_epsilon is None else f"{r.composed_epsilon:.4g} ({r.composed_delta:.2g})"
        table.add_row(
            str(r.id),
            status,
            f"{r.run_dir}\n{r.arm}\n{_when(r.finished_at or r.created_at)}",
            "\n".join(_describe(m) for m in r.mechanisms),
            f"{r.epsilon:.4g} ({r.delta:.2g})" + (" planned" if r.pending else "") + f"\n{r.accountant}",
            composed,
        )
    console.print(table)
    delta, spent, reserved = _composed(ledger, source, rels, acc)
    budget = ledger.get_budget(source)
    lines = [f"composed over committed releases ({acc}): ε = {spent:.4g} at δ = {delta:.2g}"]
    if any(r.pending for r in rels):
        lines.append(f"with pending reservations: ε = {reserved:.4g}")
    if budget is None:
        lines.append("budget: none set (no limit) — `dpsynth budget set SOURCE --epsilon E --delta D`")
    else:
        left = budget.epsilon - reserved
        style = "red" if left < 0 else "green"
        lines.append(
            f"budget: ε = {budget.epsilon:.4g} at δ = {budget.delta:.2g}; left: [{style}]{left:.4g}[/{style}] "
            "(budget minus the composed spend; a new release must fit composed with it, not added to it)"
        )
    for line in lines:
        console.print(line, highlight=False)


@budget_app.command("show")
def show(
    source: Annotated[str | None, typer.Argument(help="Source fingerprint; all sources when omitted.")] = None,
    ledger: LedgerOpt = None,
    accountant: Annotated[
        str | None, typer.Option("--accountant", help="Accountant for composition (default: the latest release's).")
    ] = None,
) -> None:
    """Releases, their mechanisms and epsilons, the composed spend, the budget and what is left."""
    console = Console()
    if accountant is not None and accountant not in ACCOUNTANTS:
        raise _fail(DPSynthError(f"unknown accountant {accountant!r} (choose one of {', '.join(ACCOUNTANTS)})"))
    path = ledger if ledger is not None else default_ledger_path()
    if not path.exists():
        console.print(f"no ledger at {path}: nothing has been released yet")
        if source is not None:
            raise _fail(DPSynthError(f"unknown source {source}"))
        return
    try:
        led = Ledger(path)
        sources = led.sources()
        if source is not None:
            if source not in sources:
                raise DPSynthError(f"unknown source {source} (the ledger at {path} has {len(sources)} sources)")
            sources = [source]
        if not sources:
            console.print(f"the ledger at {path} is empty")
        for s in sources:
            _show_source(console, led, s, accountant)  # type: ignore[arg-type]
    except DPSynthError as err:
        raise _fail(err) from err


@budget_app.command("set")
def set_budget(
    source: Annotated[str, typer.Argument(help="Source fingerprint (as `dpsynth budget show` lists it).")],
    epsilon: Annotated[float, typer.Option("--epsilon", "-e", help="Total epsilon all releases may spend.")],
    delta: Annotated[float, typer.Option("--delta", "-d", help="The delta at which releases are composed.")],
    ledger: LedgerOpt = None,
) -> None:
    """Set (or change) a source's budget. Releases already committed stay; a new one must fit in what is left."""
    path = ledger if ledger is not None else default_ledger_path()
    try:
        led = Ledger(path)
        led.set_budget(source, epsilon, delta)
        rels = led.releases(source, include_pending=True)
        acc: AccountantName = rels[-1].accountant if rels else "prv"
        reserved = led.spent(source, delta, acc, include_pending=True)
    except DPSynthError as err:
        raise _fail(err) from err
    Console().print(
        f"budget of {source}: ε = {epsilon:g} at δ = {delta:g}; already spent or reserved: {reserved:.4g} ({acc})",
        highlight=False,
    )
    if reserved > epsilon:
        Console(stderr=True).print("[yellow]warning:[/yellow] the source is already over this budget", highlight=False)


@budget_app.command("abandon")
def abandon(
    entry: Annotated[int, typer.Argument(help="Id of a PENDING entry (as `dpsynth budget show` lists it).")],
    ledger: LedgerOpt = None,
) -> None:
    """Drop a pending reservation whose run will never finish (it stops counting against the budget).

    Only for runs that released nothing: a crashed run resumed later reserves again. Committed releases stay forever.
    """
    path = ledger if ledger is not None else default_ledger_path()
    try:
        if not path.exists():
            raise DPSynthError(f"no ledger at {path}")
        Ledger(path).abandon(entry)
    except DPSynthError as err:
        raise _fail(err) from err
    Console().print(f"abandoned pending entry #{entry}", highlight=False)
