"""``dpsynth budget``: look at and set the privacy budgets in the ledger.

The main CLI mounts :data:`budget_app` (``app.add_typer(budget_app, name="budget")``). Every number shown comes from
the ledger's stored mechanisms through :mod:`dpsynth.privacy.accounting`; nothing here computes epsilon itself.

The ledger and the accountants (opacus, hence torch) are imported inside the commands, never at module level: the main
CLI imports this module to list the commands, and ``dpsynth --help`` must not wait for torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from dpsynth.cli_base import HELP_MARKUP, DPSynthGroup, err_console, out_console
from dpsynth.errors import ConfigError, DPSynthError

if TYPE_CHECKING:
    from dpsynth.privacy.accounting import AccountantName, Mechanism
    from dpsynth.privacy.ledger import Ledger, Release

budget_app = typer.Typer(
    name="budget",
    cls=DPSynthGroup,
    rich_markup_mode=HELP_MARKUP,
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
    err_console().print(f"[red]error:[/red] {err}", highlight=False)
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


def _ledger_path(ledger: Path | None) -> Path:
    from dpsynth.privacy.ledger import default_ledger_path

    return ledger if ledger is not None else default_ledger_path()


@budget_app.command("show")
def show(
    source: Annotated[str | None, typer.Argument(help="Source fingerprint; all sources when omitted.")] = None,
    ledger: LedgerOpt = None,
    accountant: Annotated[
        str | None, typer.Option("--accountant", help="Accountant for composition (default: the latest release's).")
    ] = None,
) -> None:
    """Releases, their mechanisms and epsilons, the composed spend, the budget and what is left."""
    from dpsynth.privacy.accounting import ACCOUNTANTS
    from dpsynth.privacy.ledger import Ledger

    console = out_console()
    if accountant is not None and accountant not in ACCOUNTANTS:
        raise _fail(DPSynthError(f"unknown accountant {accountant!r} (choose one of {', '.join(ACCOUNTANTS)})"))
    path = _ledger_path(ledger)
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


def resolve_source(
    text: str, known: list[str], config: Path | None = None, overrides: list[str] | None = None
) -> tuple[str, str]:
    """The ledger source that ``text`` names, and how it was found: (fingerprint, explanation).

    ``text`` is a fingerprint the ledger already knows, a prepared run directory (its ``data/prepare.json`` names the
    fingerprint its training is charged to) or a data file, fingerprinted exactly as ``prepare`` does
    (:func:`dpsynth.api.source_fingerprint`, with ``config`` and ``overrides`` for how to read it). Anything else is
    refused: a budget on a string no run is ever charged to would protect nothing while looking as if it did, so not
    even a well-formed but unknown ``sha256:...`` is taken on trust.
    """
    if text in known:
        return text, "a source the ledger knows"
    path = Path(text).expanduser()
    if path.is_dir():
        from dpsynth.rundir import RunDir, read_json

        prepared = RunDir(path).prepare_json
        if not prepared.is_file():
            raise ConfigError(f"{path} is a directory but not a prepared run directory (no {prepared})")
        fingerprint = str(read_json(prepared)["source"]["fingerprint"])
        return fingerprint, f"the source of the run directory {path} (as its data/prepare.json records it)"
    if path.is_file():
        from dpsynth import api
        from dpsynth.config import load_config

        cfg = load_config(config, overrides or [])
        cfg.data.path = path
        return api.source_fingerprint(cfg), (
            f"the data file {path}, read as `dpsynth prepare` reads it (data.schema={cfg.data.schema_}; a run that "
            "reads the file with other data.schema or data.fields settings is charged to another fingerprint)"
        )
    raise ConfigError(
        f"{text!r} is neither a source the ledger knows nor a data file or run directory that can be read. "
        "`dpsynth budget show` lists the sources the ledger knows (the sha256:... fingerprints of sources that have "
        "a release or a budget). To budget a source before its first release, give its data file (with the same "
        "--config and key=value overrides as the run) or a run directory after `dpsynth prepare`."
    )


@budget_app.command("set")
def set_budget(
    source: Annotated[
        str,
        typer.Argument(
            help="A source fingerprint the ledger knows (as `dpsynth budget show` lists it), the data file itself, "
            "or a prepared run directory."
        ),
    ],
    epsilon: Annotated[float, typer.Option("--epsilon", "-e", help="Total epsilon all releases may spend.")],
    delta: Annotated[float, typer.Option("--delta", "-d", help="The delta at which releases are composed.")],
    ledger: LedgerOpt = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config saying how to read a data file (its data section)."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Config overrides for reading a data file, as for `dpsynth prepare` (data.schema=...)."),
    ] = None,
) -> None:
    """Set (or change) a source's budget. Releases already committed stay; a new one must fit in what is left.

    Given a data file, the budget goes to the fingerprint `dpsynth prepare` computes for it (printed), so give the
    same --config and overrides as the runs on it. Example:
    `dpsynth budget set reviews.csv --epsilon 8 --delta 1e-5 data.schema=generic`.
    """
    from dpsynth.privacy.ledger import Ledger, check_budget

    path = _ledger_path(ledger)
    try:
        check_budget(epsilon, delta)  # before reading a possibly large file
        known = Ledger(path).sources() if path.exists() else []
        fingerprint, how = resolve_source(source, known, config, overrides)
        led = Ledger(path)
        led.set_budget(fingerprint, epsilon, delta)
        rels = led.releases(fingerprint, include_pending=True)
        acc: AccountantName = rels[-1].accountant if rels else "prv"
        reserved = led.spent(fingerprint, delta, acc, include_pending=True)
    except DPSynthError as err:
        raise _fail(err) from err
    console = out_console()
    if fingerprint != source:
        console.print(f"{source} is {how}: source {fingerprint}", highlight=False)
    console.print(
        f"budget of {fingerprint}: ε = {epsilon:g} at δ = {delta:g}; already spent or reserved: {reserved:.4g} ({acc})",
        highlight=False,
    )
    if reserved > epsilon:
        err_console().print("[yellow]warning:[/yellow] the source is already over this budget", highlight=False)


@budget_app.command("abandon")
def abandon(
    entry: Annotated[int, typer.Argument(help="Id of a PENDING entry (as `dpsynth budget show` lists it).")],
    ledger: LedgerOpt = None,
) -> None:
    """Drop a pending reservation whose run will never finish (it stops counting against the budget).

    Only for runs that released nothing: a crashed run resumed later reserves again. Committed releases stay forever.
    """
    from dpsynth.privacy.ledger import Ledger

    path = _ledger_path(ledger)
    try:
        if not path.exists():
            raise DPSynthError(f"no ledger at {path}")
        Ledger(path).abandon(entry)
    except DPSynthError as err:
        raise _fail(err) from err
    out_console().print(f"abandoned pending entry #{entry}", highlight=False)
