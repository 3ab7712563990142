"""The sources an admin has ingested, remembered so a re-index needs no paths.

`lorebot ingest PATH --collection NAME` records (path, collection, globs) in
``<data_dir>/sources.json``; ``/lorebot reindex [collection]`` re-runs those sources.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ingest.sources import Source
from lorebot.errors import IngestError
from lorebot.settings import Settings


def registry_path(settings: Settings) -> Path:
    return settings.data_dir / "sources.json"


def load_sources(settings: Settings, collection: str | None = None) -> list[Source]:
    """Recorded sources, optionally of one collection."""
    path = registry_path(settings)
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IngestError(
            f"cannot read {path}: {exc}", fix="fix or delete the file and ingest again"
        ) from None
    sources = [
        Source(Path(r["path"]), r["collection"], r.get("include", []), r.get("exclude", []))
        for r in rows
    ]
    return [s for s in sources if collection is None or s.collection == collection]


def record_sources(settings: Settings, sources: list[Source]) -> None:
    """Add sources to the registry (same path + collection replaces the older entry)."""
    known = {(str(s.root), s.collection): s for s in load_sources(settings)}
    for s in sources:
        known[(str(s.root), s.collection)] = s
    rows = [
        {
            "path": str(s.root),
            "collection": s.collection,
            "include": s.include,
            "exclude": s.exclude,
        }
        for s in known.values()
    ]
    path = registry_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sources-")
    with os.fdopen(fd, "w") as fh:
        json.dump(rows, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
