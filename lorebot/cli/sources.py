"""`lorebot source add|list|remove|sync`: remote sources kept in sync (ingest.connectors).

Secrets are never options: ``--secret-env VAR`` or ``--secret-file PATH`` name where the
token is, and the sync reads it from there, so it never shows in ``ps``, a shell history
or the stored source list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lorebot.cli.root import console, settings
from lorebot.errors import ConfigError

source_app = typer.Typer(
    help="Remote sources (S3, web sites, Git, Confluence, SharePoint, Drive) kept in sync.",
    no_args_is_help=True,
)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        key, sep, coll = v.partition("=")
        if not sep or not coll:
            raise ConfigError(
                f"{option} {v!r} is not PREFIX=COLLECTION", fix=f"e.g. {option} eng/=eng"
            )
        out[key] = coll
    return out


@source_app.command("add")
def add_cmd(
    name: Annotated[str, typer.Argument(help="A name for the source.")],
    kind: Annotated[
        str, typer.Option("--kind", help="s3, web, git, confluence, sharepoint, gdrive or notion.")
    ],
    collection: Annotated[str, typer.Option("--collection", help="Collection it feeds.")],
    url: Annotated[
        str | None,
        typer.Option("--url", help="web: start URL; git: repository; s3: endpoint (unset = AWS)."),
    ] = None,
    bucket: Annotated[str | None, typer.Option("--bucket", help="s3: the bucket.")] = None,
    prefix: Annotated[str, typer.Option("--prefix", help="s3: only keys under this.")] = "",
    region: Annotated[str | None, typer.Option("--region", help="s3: region.")] = None,
    branch: Annotated[str, typer.Option("--branch", help="git: the branch.")] = "main",
    space: Annotated[
        list[str] | None, typer.Option("--space", help="confluence: a space key (repeat).")
    ] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="sharepoint: tenant id.")] = None,
    drive: Annotated[str | None, typer.Option("--drive", help="sharepoint: drive id.")] = None,
    token_url: Annotated[
        str | None, typer.Option("--token-url", help="sharepoint: OAuth token endpoint.")
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="User name / S3 access key id.")
    ] = None,
    secret_env: Annotated[
        str | None, typer.Option("--secret-env", help="Environment variable holding the secret.")
    ] = None,
    secret_file: Annotated[
        Path | None, typer.Option("--secret-file", help="File holding the secret.")
    ] = None,
    route: Annotated[
        list[str] | None,
        typer.Option(
            "--route",
            help="PREFIX=COLLECTION: documents under PREFIX (or in a Confluence space) go there.",
        ),
    ] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="Glob to take.")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Glob to skip.")] = None,
    sitemap: Annotated[
        list[str] | None, typer.Option("--sitemap", help="web: sitemap URL.")
    ] = None,
    path_prefix: Annotated[
        list[str] | None, typer.Option("--path-prefix", help="web: URL path to stay under.")
    ] = None,
    max_depth: Annotated[int, typer.Option("--max-depth", help="web: link depth.")] = 3,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="Cron (local time) of automatic syncs.")
    ] = None,
    max_documents: Annotated[int, typer.Option("--max-documents")] = 5000,
    max_document_mb: Annotated[float, typer.Option("--max-document-mb")] = 25.0,
) -> None:
    """Add a source (its documents arrive with the first `lorebot source sync`)."""
    from pydantic import ValidationError

    from ingest.connectors.sync import add_source
    from lorebot.settings import SourceConfig

    raw = {
        "kind": kind,
        "collection": collection,
        "url": url,
        "bucket": bucket,
        "prefix": prefix,
        "region": region,
        "branch": branch,
        "spaces": space or [],
        "tenant": tenant,
        "drive": drive,
        "token_url": token_url,
        "username": username,
        "secret_env": secret_env,
        "secret_file": secret_file,
        "collections": _pairs(route, "--route"),
        "include": include or [],
        "exclude": exclude or [],
        "sitemaps": sitemap or [],
        "path_prefixes": path_prefix or [],
        "max_depth": max_depth,
        "schedule": schedule,
        "max_documents": max_documents,
        "max_document_mb": max_document_mb,
    }
    try:
        cfg = SourceConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "source"
        raise ConfigError(f"invalid source {name}: {where}: {first['msg']}") from None
    add_source(settings(), name, cfg)
    console.print(f"source {name} added; run `lorebot source sync {name}` to fetch it")


@source_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every source: kind, where it is, collection, schedule and its last sync."""
    from ingest.connectors.sync import all_sources, load_state

    s = settings()
    rows = []
    for name, (cfg, origin) in sorted(all_sources(s).items()):
        state = load_state(s, name)
        where = cfg.url or ""
        if cfg.kind == "s3":
            where = f"s3://{cfg.bucket}/{cfg.prefix}" + (f" at {cfg.url}" if cfg.url else "")
        elif cfg.kind == "git":
            where = f"{cfg.url} ({cfg.branch})"
        elif cfg.kind == "confluence":
            where = f"{cfg.url} spaces {','.join(cfg.spaces)}"
        elif cfg.kind == "gdrive":
            where = f"shared drive {cfg.drive}" if cfg.drive else "shared with the account"
        elif cfg.kind == "sharepoint":
            where = f"drive {cfg.drive}" + (f" at {cfg.url}" if cfg.url else "")
        rows.append(
            {
                "name": name,
                "kind": cfg.kind,
                "where": where,
                "collection": cfg.collection,
                "routes": cfg.collections,
                "schedule": cfg.schedule,
                "defined_in": origin,
                "documents": len(state.get("docs") or {}),
                "failures": len(state.get("failures") or []),
                "last_sync": state.get("last_sync"),
                "last_error": state.get("last_error"),
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "kind", "where", "collection", "schedule", "docs", "failed", "last sync")
    for r in rows:
        last = (r["last_sync"] or "never") + (
            f" [red]{r['last_error']}[/]" if r["last_error"] else ""
        )
        table.add_row(
            r["name"],
            r["kind"],
            r["where"],
            r["collection"],
            r["schedule"] or "manual",
            str(r["documents"]),
            str(r["failures"]),
            last,
        )
    console.print(table)


@source_app.command("show")
def show_cmd(name: Annotated[str, typer.Argument(help="The source.")]) -> None:
    """The source's last sync as JSON: when, its error, each failed document and why."""
    from ingest.connectors.sync import get_source, load_state

    s = settings()
    get_source(s, name)  # a one-line error for an unknown name
    state = load_state(s, name)
    print(
        json.dumps(
            {
                "source": name,
                "last_sync": state.get("last_sync"),
                "last_error": state.get("last_error"),
                "index_version": state.get("index_version"),
                "documents": len(state.get("docs") or {}),
                "collections": state.get("collections") or [],
                "build_owed": bool(state.get("needs_build")),
                "failures": state.get("failures") or [],
            },
            indent=2,
        )
    )


@source_app.command("remove")
def remove_cmd(name: Annotated[str, typer.Argument(help="The source.")]) -> None:
    """Take the source's documents out of the index and forget it."""
    from ingest.connectors.sync import all_sources, remove_source

    s = settings()
    found = all_sources(s).get(name)
    if found is None:
        raise ConfigError(f"no source named {name}", fix="see `lorebot source list`")
    report = remove_source(s, name)
    console.print(report.message)
    if found[1] == "settings":
        console.print(f"source {name} is defined in the settings: remove it there too")


@source_app.command("sync")
def sync_cmd(
    name: Annotated[str | None, typer.Argument(help="The source (omit with --due).")] = None,
    due: Annotated[bool, typer.Option("--due", help="Every source whose schedule is due.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    queue: Annotated[
        bool, typer.Option("--queue", help="Send it to the ingest workers instead.")
    ] = False,
) -> None:
    """Fetch what changed in a source and update the index (here, or on a worker)."""
    from ingest.connectors.sync import due_sources, sync_source
    from lorebot import contracts

    s = settings()
    if not name and not due:
        raise ConfigError("name a source or pass --due", fix="see `lorebot source list`")
    if queue:
        from workers.client import make_client

        make_client(s.redis.effective_url).send_task(
            contracts.TASK_SOURCE_SYNC,
            kwargs={"name": name},
            queue=contracts.QUEUE_INGEST,
        )
        console.print(f"sync of {name or 'the due sources'} sent to the ingest queue")
        return
    names = [name] if name else due_sources(s)
    reports = [sync_source(s, n) for n in names]
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return
    for r in reports:
        console.print(r.summary())
        for f in r.failures[:20]:
            console.print(f"  [yellow]{f['id']}[/]: {f['reason']}", highlight=False)
        if len(r.failures) > 20:
            console.print(f"  … and {len(r.failures) - 20} more (--json lists them)")
