"""The ``dpsynth`` command line: a thin layer over :mod:`dpsynth.api`. Its help text is the reference documentation.

Every command takes a run directory (``--out DIR``), an optional YAML config (``--config FILE``; by default the
run's saved ``DIR/config.yaml``, else the built-in defaults) and any number of ``key.sub=value`` overrides.

Output: results (each stage's summary as the stage ends, tables, the paths of what was written) go to stdout through
:func:`dpsynth.cli_base.out_console`, the summaries themselves live in :mod:`dpsynth.cli_print`; progress bars, logs
and errors go to stderr.

Import discipline (``dpsynth --help`` and a configuration error must answer at once, not after seconds of torch):

- This module and every command module it mounts import at module level only the standard library, typer, rich and
  light dpsynth modules (``cli_base``, ``cli_print``, ``errors``, ``rundir``, ``config``). Whatever needs torch,
  transformers, opacus, peft, sentence-transformers, scikit-learn, mauve or faiss is imported inside the command body
  (``from dpsynth import api`` and the stage modules), after the configuration has been validated.
- A command of another subpackage lives in that subpackage's ``cli.py`` (e.g. ``dpsynth/privacy/cli.py`` defines
  ``budget_app``; a new one, say ``dpsynth/frontier/cli.py``, would define ``frontier`` the same way) and is mounted in
  :func:`_mount_subcommands`: ``app.add_typer(sub_app, name=...)`` for a group of commands, or
  ``app.command("name")(function)`` for one. Groups use ``typer.Typer(cls=DPSynthGroup,
  rich_markup_mode=HELP_MARKUP, ...)``: flags without a ``<bool>`` label, and help text as Markdown, so that a
  docstring's lines wrap as one paragraph (write ``DIR/ARM``, not ``DIR/<arm>``: Markdown drops ``<...>``).
- ``tests/test_cli.py::test_help_and_config_errors_import_no_heavy_library`` checks every registered command's
  ``--help`` and a configuration error in a fresh interpreter; a new command is covered by registering it.
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
from rich.markup import escape

from dpsynth import __version__
from dpsynth.cli_base import HELP_MARKUP, DPSynthGroup, err_console, out_console
from dpsynth.cli_print import (
    print_audit,
    print_evaluation,
    print_generated,
    print_outputs,
    print_prepare,
    print_training,
)
from dpsynth.errors import DPSynthError

app = typer.Typer(
    name="dpsynth",
    cls=DPSynthGroup,
    rich_markup_mode=HELP_MARKUP,
    help=(
        "Differentially private synthetic data from private text, with the evidence of how private and useful "
        "it is.\n\n"
        "Stages: prepare -> train -> generate -> evaluate, each reading and writing one run directory; `run` chains "
        "them. Also: audit (an empirical privacy audit of the training), budget (the privacy ledger), frontier "
        "(a privacy-utility sweep over several epsilons).\n\n"
        "Configuration: --config FILE (YAML) and key.sub=value overrides, e.g. "
        "`dpsynth run --out runs/a data.path=reviews.csv.gz data.max_records=300 train.max_steps=10`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount_subcommands() -> None:
    from dpsynth.frontier.cli import frontier
    from dpsynth.privacy.cli import budget_app

    app.add_typer(budget_app, name="budget", help="The privacy ledger: what each source has spent, and its budget.")
    app.command("frontier")(frontier)


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
    # faiss logs at INFO each SIMD build it tried and could not import (three lines and two tracebacks per process)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    else:  # the same settings, read when transformers is imported (importing it here would cost seconds)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _default_out() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def _guard(fn: Any) -> Any:
    """Run a command body; user errors become a message and a non-zero exit (never a traceback)."""
    try:
        return fn()
    except DPSynthError as exc:
        # escaped: a message may hold brackets (`pip install 'dpsynth[tracking]'`, a list value) that are not markup
        err_console().print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console().print("interrupted; rerun with --resume to continue from the last checkpoint")
        raise typer.Exit(130) from None


@app.command()
def prepare(out: OutOpt, config: ConfigOpt = None, overrides: OverridesArg = None, quiet: QuietOpt = False) -> None:
    """Read, clean, bound and split the private data into DIR/data (train.jsonl, test.jsonl, prepare.json)."""
    from dpsynth import api

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    print_prepare(_guard(lambda: api.prepare(cfg, out)))


@app.command()
def train(
    out: OutOpt,
    config: ConfigOpt = None,
    overrides: OverridesArg = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune LoRA adapters: the DP arm (DP-SGD) and the non-DP baseline; writes DIR/dp/privacy.json and
    DIR/no_dp/privacy.json."""
    from dpsynth import api

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    results = _guard(lambda: api.train(cfg, out, resume=resume, progress=not quiet))
    # empty on every torchrun rank but rank 0; a rank launched by `train.distributed` leaves it to its launcher
    if results and api.LAUNCHED_ENV not in os.environ:
        print_training(results)


@app.command()
def generate(
    out: OutOpt,
    config: ConfigOpt = None,
    overrides: OverridesArg = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Sample synthetic records from each arm's adapter, with control codes from the released histogram; with
    generator=pe, run Private Evolution (DIR/pe, a DP release; --resume continues an interrupted run)."""
    from dpsynth import api

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    print_generated(_guard(lambda: api.generate(cfg, out, progress=not quiet, resume=resume)))


@app.command()
def evaluate(out: OutOpt, config: ConfigOpt = None, overrides: OverridesArg = None, quiet: QuietOpt = False) -> None:
    """Measure privacy (canaries, exposure, membership inference, copying), fidelity, utility and quality of every
    arm against the held-out test split; writes DIR/eval/metrics.json and the report."""
    from dpsynth import api

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    print_evaluation(_guard(lambda: api.evaluate(cfg, out, progress=not quiet)), out)


_STAGE_PRINTERS: dict[str, Any] = {
    "prepare": print_prepare,
    "train": print_training,
    "generate": print_generated,
}


@app.command()
def run(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "--run", "-o", help="Run directory (default: runs/ and the time, e.g. runs/20261201-183000)."
        ),
    ] = None,
    config: ConfigOpt = None,
    overrides: OverridesArg = None,
    resume: ResumeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every stage, printing each stage's summary as it ends. With no config and no data.path it runs offline
    on a built-in demo data set."""
    from dpsynth import api

    _setup_logging(quiet)
    out = out or _default_out()
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    out_console().print(f"run directory: {out}", highlight=False)

    def stage_done(stage: str, result: Any) -> None:
        if stage == "evaluate":
            print_evaluation(result, out)
        else:
            _STAGE_PRINTERS[stage](result)

    _guard(lambda: api.run_pipeline(cfg, out, resume=resume, progress=not quiet, on_stage=stage_done))
    print_outputs(out)


@app.command()
def audit(out: OutOpt, config: ConfigOpt = None, overrides: OverridesArg = None, quiet: QuietOpt = False) -> None:
    """One-run privacy audit (Steinke et al. 2023): trains DP and no-DP arms with canaries in DIR/audit.

    Exits with status 4 when the DP arm's empirical lower bound exceeds its epsilon (a DP bug, at the confidence
    given by audit.significance). Example: `dpsynth audit --out DIR audit.num_canaries=500 audit.no_dp_epochs=4`.
    """
    from dpsynth import api
    from dpsynth.errors import PrivacyCheckError

    _setup_logging(quiet)
    cfg = _guard(lambda: api.load_run_config(out, config, overrides))
    result = _guard(lambda: api.audit(cfg, out, progress=not quiet))
    print_audit(result)
    if result["checks"]["dp_eps_lb_le_epsilon"] is False:
        raise typer.Exit(PrivacyCheckError.exit_code)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point (and each torchrun rank's, through ``python -m dpsynth``)."""
    from dpsynth.allocator import keep_freed_memory

    keep_freed_memory()  # before any tensor: large blocks reused, not mapped and faulted in again every step
    try:
        app()
    except DPSynthError as exc:  # pragma: no cover - commands already guard
        err_console().print(f"error: {exc}", highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
