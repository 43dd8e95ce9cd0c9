"""What every ``dpsynth`` command module shares: where output goes, and help text without noise.

Kept apart from :mod:`dpsynth.cli` so that subcommand modules (``dpsynth.privacy.cli``, ...) can use it without
importing the main CLI, and light on purpose: importing it (like importing any command module) must not import torch,
transformers, opacus or any other heavy library, so that ``--help`` and configuration errors answer at once.

Streams: **results** (stage summaries, tables, the paths of what a command wrote) go to stdout, where a user pipes or
saves them; progress bars, logs and errors go to stderr.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from rich.console import Console
from typer.core import TyperGroup

HELP_MARKUP: Literal["markdown"] = "markdown"
"""Help text is Markdown: typer's "rich" mode keeps a docstring's line breaks, which then break mid-sentence."""

WIDE = 240
"""Page width when the stream is not a terminal (see :func:`out_console`)."""


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    # Off a terminal (a pipe, a file, a CI log) rich assumes 80 columns and cuts table cells ("accounta…"): give it a
    # wide page instead (a table only takes the width it needs) and never wrap prose. An explicit COLUMNS still wins.
    return Console(stderr=stderr, width=WIDE, soft_wrap=True)


def out_console() -> Console:
    """The console for results (stdout). Made per use, so that it sees the stream as it is now (tests swap it)."""
    return _console(stderr=False)


def err_console() -> Console:
    """The console for errors and notices (stderr)."""
    return _console(stderr=True)


def _drop_bool_metavar(params: list[Any]) -> list[Any]:
    # A flag takes no value, but typer labels it "<bool>" in the help, which reads as if one were expected.
    for param in params:
        if getattr(param, "is_bool_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class DPSynthGroup(TyperGroup):
    """A command group whose help shows flags (``--resume``, ``--quiet``, ``--help``) without a ``<bool>`` label.

    Use it for every ``typer.Typer`` of dpsynth: ``typer.Typer(cls=DPSynthGroup, ...)``. It fixes its own options and
    those of each command it resolves; a nested group fixes its own commands when it uses this class too.
    """

    def get_params(self, ctx: Any) -> list[Any]:
        return _drop_bool_metavar(super().get_params(ctx))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _drop_bool_metavar(cmd.get_params(ctx))
        return cmd
