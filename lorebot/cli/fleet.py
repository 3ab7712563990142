"""`lorebot sync publish|pull|status|keygen`: index and adapter versions in the shared location."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lorebot.cli.root import console, settings
from lorebot.errors import LorebotError

sync_app = typer.Typer(
    help="Index and adapter versions in the shared location (LOREBOT_SYNC__URL).",
    no_args_is_help=True,
)


@sync_app.command("publish")
def sync_publish_cmd(
    kind: Annotated[str, typer.Option("--kind", help="index, adapters or all.")] = "all",
) -> None:
    """Upload the local CURRENT index / adapter to the shared location (after a failed upload)."""
    from lorebot import sync

    s = settings()
    if not sync.enabled(s):
        raise LorebotError("no sync location is configured", fix="set LOREBOT_SYNC__URL")
    for k in sync.KINDS if kind == "all" else (kind,):
        r = sync.publish(s, k)
        console.print(
            f"{k}: published {r.version or 'none'} ({r.files} files uploaded, {r.seconds:.1f} s)"
        )


@sync_app.command("keygen")
def sync_keygen_cmd(
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory for the key pair; default data_dir.")
    ] = None,
) -> None:
    """Create the Ed25519 key pair that signs published versions (never overwrites one).

    sync-signing.key (mode 0600) goes to publishing roles only (LOREBOT_SYNC__SIGNING_KEY);
    sync-signing.pub to every worker (LOREBOT_SYNC__VERIFY_KEY).
    """
    from lorebot import sync

    folder = out or settings().data_dir
    private, public = folder / "sync-signing.key", folder / "sync-signing.pub"
    try:
        kid = sync.generate_keys(private, public)
    except FileExistsError:
        raise LorebotError(
            f"{private} already exists", fix="keep it, or move it away to make a new pair"
        ) from None
    console.print(f"key {kid}: private {private} (0600, publishers only), public {public}")


@sync_app.command("pull")
def sync_pull_cmd() -> None:
    """Fetch the published index / adapter versions into this data directory now."""
    from lorebot import sync

    s = settings()
    if not sync.enabled(s):
        raise LorebotError("no sync location is configured", fix="set LOREBOT_SYNC__URL")
    for k in sync.KINDS:
        r = sync.pull(s, k)
        console.print(
            f"{k}: local {r.local or 'none'}, "
            f"remote {r.remote if r.remote is not None else 'never published'}"
            f" ({r.files} files downloaded, {r.seconds:.1f} s)"
        )


@sync_app.command("status")
def sync_status_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Local and published versions, and what every worker announced it serves."""
    import redis

    from lorebot import sync

    s = settings()
    out: dict[str, object] = {"location": sync.status(s)}
    try:
        out["workers"] = sync.serving_workers(s)
    except redis.RedisError as exc:
        out["workers_error"] = type(exc).__name__
    if as_json:
        print(json.dumps(out, indent=2))
        return
    table = Table("worker", "index", "adapter", "announced", title="what each worker serves")
    for name, w in sorted(dict(out.get("workers") or {}).items()):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(w.get("at", 0)))
        table.add_row(
            name,
            str(w.get("index")),
            str(w.get("adapter") or w.get("adapter_synced") or "base"),
            at,
        )
    console.print(json.dumps(out["location"], indent=1))
    console.print(table)
