"""The sources an admin has ingested, remembered so a re-index can run them again.

``lorebot ingest PATH --collection NAME`` records its sources here; the ``ingest`` queue's
re-index task (``/lorebot reindex [collection]``) loads them and runs an incremental
build over them. Stored as a JSON list in ``<data_dir>/sources.json``, written atomically.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.sources import Source
from lorebot.errors import IngestError
from lorebot.files import atomic_write_text
from lorebot.settings import Settings

log = logging.getLogger(__name__)

REGISTRY = "sources.json"


def registry_path(settings: Settings) -> Path:
    return settings.data_dir / REGISTRY


def _read(settings: Settings) -> list[dict[str, Any]]:
    path = registry_path(settings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise IngestError(
            f"the source registry {path} cannot be read: {exc}",
            fix=f"delete {path} and ingest your folders again",
        ) from None
    rows = data.get("sources", []) if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise IngestError(
            f"the source registry {path} is not a list", fix=f"delete {path} and ingest again"
        )
    return [s for s in rows if isinstance(s, dict) and "path" in s and "collection" in s]


def record_sources(settings: Settings, sources: list[Source]) -> None:
    """Remember sources (absolute paths); re-recording one updates its globs."""
    entries = _read(settings)
    by_key = {(e["path"], e["collection"]): e for e in entries}
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for src in sources:
        key = (str(src.root), src.collection)
        entry = by_key.get(key)
        if entry is None:
            entry = {"path": key[0], "collection": src.collection}
            entries.append(entry)
            by_key[key] = entry
        entry.update(include=list(src.include), exclude=list(src.exclude), recorded_at=now)
    atomic_write_text(registry_path(settings), json.dumps(entries, indent=2))
    log.info("recorded %d source(s) in %s", len(sources), registry_path(settings))


def load_sources(settings: Settings, collection: str | None = None) -> list[Source]:
    """Recorded sources, of one collection or all, in the order they were first recorded."""
    return [
        Source(
            path=Path(e["path"]),
            collection=e["collection"],
            include=e.get("include") or [],
            exclude=e.get("exclude") or [],
        )
        for e in _read(settings)
        if collection is None or e["collection"] == collection
    ]


def recorded_sources(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded source as stored (path, collection, include, exclude, recorded_at),
    read-only, for status pages (the admin console)."""
    return [dict(e) for e in _read(settings)]


def forget_sources(
    settings: Settings, collection: str | None = None, path: Path | None = None
) -> int:
    """Drop recorded sources (of a collection and/or a path); returns how many went."""
    entries = _read(settings)
    keep = [
        e
        for e in entries
        if not (
            (collection is None or e["collection"] == collection)
            and (path is None or e["path"] == str(Path(path).expanduser().resolve()))
        )
    ]
    atomic_write_text(registry_path(settings), json.dumps(keep, indent=2))
    return len(entries) - len(keep)
