"""Plain functions behind ``lorebot ingest`` and the demo's sample index.

:mod:`lorebot.cli` loads the settings, calls these and prints the report; they raise
lorebot's domain errors, which the CLI prints as one line.
"""

from __future__ import annotations

from pathlib import Path

from ingest.build import build_index
from ingest.report import IngestReport
from ingest.sources import Source
from lorebot.settings import Settings


def ingest_paths(
    settings: Settings,
    paths: list[Path],
    *,
    collection: str | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    full: bool = False,
    progress: bool = True,
) -> IngestReport:
    """Build a new index version from ``paths``, then remember them for the nightly re-index.

    Raises IngestError (with ``.report`` when files were tried) when nothing could be
    indexed; the sources are recorded only after a build that succeeded.
    """
    from ingest.registry import record_sources

    coll = collection or settings.index.default_collection
    sources = [
        Source(path=p, collection=coll, include=include or [], exclude=exclude or []) for p in paths
    ]
    report = build_index(settings, sources, full=full, progress=progress)
    record_sources(settings, sources)
    return report


def ingest_sample(settings: Settings, directory: Path) -> IngestReport:
    """Index the sample handbook in ``directory`` as the ``handbook`` collection (the demo)."""
    return build_index(settings, [Source(path=directory, collection="handbook")], progress=True)
