"""`lorebot console`: the admin console in the browser, and the hash of its password."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lorebot.cli.root import err_console, settings

console_app = typer.Typer(
    help="The admin console in the browser (sign-in required).", invoke_without_command=True
)


@console_app.callback()
def console_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface (default console.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default console.port).")] = None,
) -> None:
    """Serve the console (console.host:console.port, loopback by default)."""
    if ctx.invoked_subcommand is not None:
        return
    from console.server import check, serve

    s = settings()
    if host is not None or port is not None:
        s = s.model_copy(
            update={
                "console": s.console.model_copy(
                    update={k: v for k, v in (("host", host), ("port", port)) if v is not None}
                )
            }
        )
    check(s)
    err_console.print(f"lorebot console on http://{s.console.host}:{s.console.port}/")
    serve(s)


@console_app.command("hash-password")
def hash_password_cmd() -> None:
    """Read a password (prompted, or one line on stdin) and print its argon2 hash."""
    from console.auth import hash_password

    if sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        print(hash_password(password))
    except ValueError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    err_console.print("set it as LOREBOT_CONSOLE__PASSWORD_HASH (or console.password_hash)")
