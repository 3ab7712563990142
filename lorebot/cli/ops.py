"""`lorebot config`, `doctor` and `health`: what an operator checks first."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from lorebot.cli.root import console, settings


def config_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings, secrets masked."""
    values = settings().public_dict()
    if as_json:
        print(json.dumps(values, indent=2))
        return
    table = Table(
        "setting", "value", title="lorebot settings (env LOREBOT_*, config file, defaults)"
    )

    def rows(prefix: str, obj: dict) -> None:
        for key, val in obj.items():
            name = f"{prefix}{key}"
            if (
                isinstance(val, dict)
                and val
                and all(isinstance(k, str) for k in val)
                and key not in ("channel_collections",)
            ):
                rows(name + ".", val)
            else:
                table.add_row(name, json.dumps(val) if not isinstance(val, str) else val)

    rows("", values)
    console.print(table)


def doctor_cmd(
    services: Annotated[
        bool, typer.Option("--services/--no-services", help="Also check Redis and the index.")
    ] = True,
) -> None:
    """Check every model, binary and service; exit 1 if anything is wrong."""
    from lorebot.cli.doctor import run_checks

    checks = run_checks(settings(), services=services)
    table = Table("check", "status", "detail", "fix", title="lorebot doctor")
    for c in checks:
        table.add_row(c.name, "[green]OK[/]" if c.ok else "[red]problem[/]", c.detail, c.fix)
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def health_cmd(
    worker: Annotated[
        bool, typer.Option("--worker", help="Require a live worker (Celery ping).")
    ] = False,
    this_host: Annotated[
        bool, typer.Option("--this-host", help="With --worker: a worker on this host must answer.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each answer.")
    ] = 2.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Exit 0 when Redis (and, with --worker, a worker) answers; for scripts and probes.

    The Redis URL comes from the settings (LOREBOT_REDIS__URL), so a health check built on
    this command carries no password on its command line.
    """
    import socket

    from lorebot.cli.stack import redis_ping

    s = settings()
    status: dict[str, object] = {"redis": redis_ping(s.redis.effective_url, timeout=timeout)}
    if worker and status["redis"]:
        from workers.cli import ping_workers

        nodes = ping_workers(s, timeout=timeout)
        if this_host:
            host = socket.gethostname()
            nodes = [n for n in nodes if n.endswith("@" + host)]
        status["workers"] = nodes
    ok = bool(status["redis"]) and (not worker or bool(status.get("workers")))
    status["ok"] = ok
    if as_json:
        print(json.dumps(status))
    else:
        console.print(
            ("healthy: " if ok else "unhealthy: ")
            + ", ".join(f"{k}={v}" for k, v in status.items() if k != "ok")
        )
    if not ok:
        raise typer.Exit(1)
