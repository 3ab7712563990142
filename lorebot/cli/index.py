"""`lorebot ingest`: documents into a new index version (through ingest.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lorebot.cli.root import console, settings
from lorebot.errors import IngestError


def ingest_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to ingest.")],
    collection: Annotated[str | None, typer.Option("--collection", help="Collection name.")] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Glob of files to include.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Glob of files to skip.")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Rebuild from scratch.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 3 when any file failed.")] = False,
) -> None:
    """Parse, chunk and embed documents into a new index version."""
    from ingest.cli import ingest_paths

    try:
        report = ingest_paths(
            settings(),
            paths,
            collection=collection,
            include=include,
            exclude=exclude,
            full=full,
            progress=not as_json,
        )
    except IngestError as exc:
        failed = getattr(exc, "report", None)
        if failed is not None and not as_json:  # nothing could be indexed: show why per file
            console.print(failed.problems_table())
        raise
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        console.print(report.table())
        if report.failed or report.skipped:
            console.print(report.problems_table())
        console.print(report.summary())
    if strict and report.failed:
        raise typer.Exit(3)
