"""The root of the `lorebot` command line: the Typer app, settings, errors to exit codes.

This is the only place settings are loaded for CLI processes. Every command turns domain
errors into one line on stderr and a non-zero exit code (:func:`main`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lorebot.errors import LorebotError
from lorebot.settings import Settings, load_settings

#: When this module was imported: the fallback start of :func:`process_age_s`.
_IMPORTED = time.perf_counter()

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
    #: Set by a command with nothing left to clean up (`ask`): :func:`main` then ends the
    #: process without the interpreter's teardown of every imported module (0.3-0.7 s
    #: on two cores, after the answer is printed).
    exit_fast: bool = False


def settings() -> Settings:
    """Load the settings once per process (validated: a bad value is a one-line error)."""
    if State.settings is None:
        State.settings = load_settings(State.config_file)
        _setup_logging(State.settings)
    return State.settings


def process_age_s() -> float:
    """Seconds since this process started: the interpreter and every import included.

    Linux gives the start time (/proc, 10 ms ticks); elsewhere this counts from the
    import of this module, which misses the interpreter's own start.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


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
    State.exit_fast = False
    _offline_env()


def _exit_now(code: int) -> None:
    """Exit after what a normal exit does that matters (atexit handlers, logging, flushed
    output), skipping the teardown of the interpreter's modules."""
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Console entry: run the app, turning domain errors into one line and an exit code."""
    try:
        # Without standalone mode click returns the code of typer.Exit instead of exiting.
        code = app(standalone_mode=False)
        code = code if isinstance(code, int) else 0
        if State.exit_fast:
            _exit_now(code)
        sys.exit(code)
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
