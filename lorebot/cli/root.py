"""The root of the `lorebot` command line: the Typer app, settings, errors to exit codes.

This is the only place settings are loaded for CLI processes. Every command turns domain
errors into one line on stderr and a non-zero exit code (:func:`main`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lorebot.errors import LorebotError
from lorebot.settings import Settings, load_settings

app = typer.Typer(
    name="lorebot",
    help="Answers staff questions from internal documents with a small local model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)


class State:
    config_file: Path | None = None
    settings: Settings | None = None


def settings() -> Settings:
    """Load the settings once per process (validated: a bad value is a one-line error)."""
    if State.settings is None:
        State.settings = load_settings(State.config_file)
        _setup_logging(State.settings)
    return State.settings


def _setup_logging(s: Settings) -> None:
    # Text or JSON lines, question context on each line, secrets redacted (lorebot/logs.py);
    # it also quiets library chatter that would drown the one-line-per-event logs.
    from lorebot.logs import setup

    setup(s, stream=sys.stderr)


def _offline_env() -> None:
    # Belt and braces: nothing we run may reach a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")] = None,
) -> None:
    State.config_file = config
    State.settings = None
    _offline_env()


def main() -> None:
    """Console entry: run the app, turning domain errors into one line and an exit code."""
    try:
        # Without standalone mode click returns the code of typer.Exit instead of exiting.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except LorebotError as exc:
        from lorebot.logs import redact

        err_console.print(
            f"[red]error:[/] {redact(exc.one_line())}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # usage errors (unknown command, bad option) and the like
        # Typer bundles its own copy of click, so its usage errors are not instances of
        # the installed click's ClickException: recognise them by what they can do.
        code = getattr(exc, "exit_code", None)
        if callable(getattr(exc, "show", None)) and isinstance(code, int):
            exc.show()
            sys.exit(code)
        raise
