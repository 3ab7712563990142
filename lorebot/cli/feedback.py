"""`lorebot feedback export`: the 👍 / 👎 stored by the bot (through bot.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lorebot.cli.root import err_console, settings

feedback_app = typer.Typer(help="Feedback from Slack users (👍 / 👎).", no_args_is_help=True)


@feedback_app.command("export")
def feedback_export_cmd(
    out: Annotated[Path, typer.Argument(help="JSONL file to write ('-' for stdout).")],
) -> None:
    """Write every stored 👍 / 👎 as JSON lines."""
    from bot.cli import export_feedback

    n = export_feedback(settings(), out)
    err_console.print(f"wrote {n} feedback records to {out}")
