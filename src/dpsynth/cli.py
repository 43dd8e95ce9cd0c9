"""The ``dpsynth`` command line: a thin layer over :mod:`dpsynth.api`. Its help text is the reference documentation.

Every command takes a run directory (``--out DIR``), an optional YAML config (``--config FILE``; by default the
run's saved ``DIR/config.yaml``, else the built-in defaults) and any number of ``key.sub=value`` overrides.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dpsynth import __version__
from dpsynth.errors import DPSynthError

app = typer.Typer(
    name="dpsynth",
    help=(
        "Differentially private synthetic data from private text, with the evidence of how private and useful "
        "it is.\n\n"
        "Stages: prepare -> train -> generate (each reads and writes one run directory); `run` chains them.\n"
        "Configuration: --config FILE (YAML) and key.sub=value overrides, e.g. "
        "`dpsynth run --out runs/a data.path=reviews.csv.gz data.max_records=300 train.max_steps=10`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _mount_subcommands() -> None:
    from dpsynth.privacy.cli import budget_app

    app.add_typer(budget_app, name="budget", help="The privacy ledger: what each source has spent, and its budget.")


_mount_subcommands()

OutOpt = Annotated[Path, typer.Option("--out", "--run", "-o", help="Run directory (created if needed).")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config; default: DIR/config.yaml if present, else defaults.")
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(help="Config overrides: key.sub=value (value parsed as YAML), e.g. privacy.target_epsilon=4"),
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint; never spends twice.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Opacus asks models about gradient checkpointing through a name transformers 5 deprecates; not the user's concern.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # Opacus's hooks on frozen-input modules (the LoRA layers of a frozen base) trigger this harmless torch notice.
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def _default_out() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _print_privacy(results: dict[str, dict[str, Any]]) -> None:
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
    console.print(table)


def _print_prepare(info: dict[str, Any]) -> None:
    counts = info.get("counts", {})
    console.print(
        f"prepared: {counts.get('train_records', '?')} training records ({counts.get('train_units', '?')} units), "
        f"{counts.get('test_records', '?')} test records; privacy unit: {info.get('privacy_unit')}"
    )


def _guard(fn: Any) -> Any:
    """Run a command body; user errors become a message and a non-zero exit (never a traceback)."""
    try:
        return fn()
    except DPSynthError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("interrupted; rerun with --resume to continue from the last checkpoint")
        raise typer.Exit(130) from None


@app.command()
def prepare(out: OutOpt, config: ConfigOpt = None, overrides: OverridesArg = None, quiet: QuietOpt = False) -> None:
    """Read, clean, bound and split the private data into DIR/data (train.jsonl, test.jsonl, prepare.json)."""
    from dpsynth import api

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    _print_prepare(_guard(lambda: api.prepare(cfg, out)))


@app.command()
def train(
    out: OutOpt,
    config: ConfigOpt = None,
    overrides: OverridesArg = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune LoRA adapters: the DP arm (DP-SGD) and the non-DP baseline; writes DIR/<arm>/privacy.json."""
    from dpsynth import api

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    _print_privacy(_guard(lambda: api.train(cfg, out, resume=resume, progress=not quiet)))


@app.command()
def generate(out: OutOpt, config: ConfigOpt = None, overrides: OverridesArg = None, quiet: QuietOpt = False) -> None:
    """Sample synthetic records from each arm's adapter, with control codes from the released histogram."""
    from dpsynth import api

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    for arm, summary in _guard(lambda: api.generate(cfg, out, progress=not quiet)).items():
        console.print(f"{arm}: {summary['records']} records -> {summary['path']}")


@app.command()
def run(
    out: Annotated[
        Path | None, typer.Option("--out", "--run", "-o", help="Run directory (default: runs/<time>).")
    ] = None,
    config: ConfigOpt = None,
    overrides: OverridesArg = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every stage. With no config and no data.path it runs offline on a built-in demo data set."""
    from dpsynth import api

    _setup_logging(quiet)
    out = out or _default_out()
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    console.print(f"run directory: {out}")
    results = _guard(lambda: api.run_pipeline(cfg, out, resume=resume, progress=not quiet))
    if "prepare" in results:
        _print_prepare(results["prepare"])
    _print_privacy(results["train"])
    for arm, summary in results["generate"].items():
        console.print(f"{arm}: {summary['records']} records -> {summary['path']}")
    if "evaluate" in results:
        _print_evaluation(results["evaluate"], out)


def _print_evaluation(doc: dict[str, Any], out: Path) -> None:
    """A few headline metrics per arm (numbers only: never a record's text)."""
    from dpsynth.evaluate.run import headline_rows

    arms, rows = headline_rows(doc)
    table = Table(title="Evaluation (headline metrics; every metric in eval/metrics.json)")
    for col in ("metric", *arms):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"evaluated in {doc['timing_s'].get('total', 0):.0f} s -> {out / 'eval' / 'metrics.json'}")


@app.command()
def evaluate(out: OutOpt, config: ConfigOpt = None, overrides: OverridesArg = None, quiet: QuietOpt = False) -> None:
    """Measure privacy (canaries, exposure, membership inference, copying), fidelity, utility and quality of every
    arm against the held-out test split; writes DIR/eval/metrics.json and the report."""
    from dpsynth import api

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    _print_evaluation(_guard(lambda: api.evaluate(cfg, out, progress=not quiet)), out)


def _print_audit(result: dict[str, Any]) -> None:
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
    console.print(table)
    console.print(f"delta {result['delta']:.2g}; details in audit/audit.json", highlight=False)


@app.command()
def audit(out: OutOpt, config: ConfigOpt = None, overrides: OverridesArg = None, quiet: QuietOpt = False) -> None:
    """One-run privacy audit (Steinke et al. 2023): trains DP and no-DP arms with canaries in DIR/audit.

    Exits with status 4 when the DP arm's empirical lower bound exceeds its epsilon (a DP bug, at the confidence
    given by audit.significance). Example: `dpsynth audit --run DIR audit.num_canaries=500 audit.no_dp_epochs=4`.
    """
    from dpsynth import api
    from dpsynth.errors import PrivacyCheckError

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    result = _guard(lambda: api.audit(cfg, out, progress=not quiet))
    _print_audit(result)
    if result["checks"]["dp_eps_lb_le_epsilon"] is False:
        raise typer.Exit(PrivacyCheckError.exit_code)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except DPSynthError as exc:  # pragma: no cover - commands already guard
        console.print(f"error: {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
