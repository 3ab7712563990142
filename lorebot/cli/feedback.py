"""`lorebot feedback export` (the 👍 / 👎 stored by the bot, through bot.cli) and
`lorebot feedback review` (admins accept or reject suggested answers and liked answers)."""

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


@feedback_app.command("review")
def feedback_review_cmd(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the votes awaiting review as JSONL ('-': stdout)."),
    ] = None,
    apply: Annotated[
        Path | None,
        typer.Option("--apply", help="Apply a reviewed JSONL file (decision: accept/reject)."),
    ] = None,
    reviewer: Annotated[str, typer.Option(help="Who reviewed (kept as provenance).")] = "admin",
) -> None:
    """Review suggested right answers (👎 + suggestion) and 👍 answers: accepted ones join
    the refresh's training pairs and its gate."""
    from lorebot.errors import ConfigError
    from lorebot.feedback import review_apply, review_export

    if (out is None) == (apply is None):
        raise ConfigError(
            "give exactly one of --out and --apply",
            fix="lorebot feedback review --out pending.jsonl, edit 'decision', then --apply it",
        )
    if out is not None:
        n = review_export(settings(), out)
        err_console.print(f"wrote {n} votes awaiting review to {out}")
        return
    counts = review_apply(settings(), apply, reviewer)
    err_console.print(", ".join(f"{k} {v}" for k, v in counts.items()))
