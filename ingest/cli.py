"""Plain functions behind ``lorebot ingest`` and the demo's sample index.

:mod:`lorebot.cli` loads the settings, calls these and prints the report; they raise
lorebot's domain errors, which the CLI prints as one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.build import build_index
from ingest.report import FleetProgress, IngestReport, worker_label
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
    fleet = fleet_reporter(settings) if settings.index.distributed and progress else None
    report = build_index(
        settings,
        sources,
        full=full,
        progress=progress,
        on_progress=fleet[1] if fleet else None,
        dispatch=fleet[0].dispatch if fleet else None,
    )
    record_sources(settings, sources)
    return report


def fleet_reporter(
    settings: Settings,
    echo: Callable[[str], None] | None = None,
    queue: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[FleetProgress, Callable[[str, int, int], None]]:
    """A distributed build's tracker and the progress callback that prints the fleet.

    One line when a worker takes its first batch, one at the end of the stage with the
    batches each worker did (the bar itself counts files). ``echo`` prints a line
    (default: to stderr, above the progress bar); ``queue`` sends a batch's task
    (default: on the ingest queue).
    """
    import redis

    from ingest.distributed import celery_dispatch

    say = echo or (lambda text: print(text, file=sys.stderr, flush=True))
    fleet = FleetProgress(
        redis.Redis.from_url(settings.redis.effective_url), queue or celery_dispatch(settings)
    )
    seen: set[str] = set()

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage != "fleet":
            return
        snap = fleet.snapshot()
        for worker in [*snap.running, *sorted(snap.done_by)]:
            if worker not in seen:
                seen.add(worker)
                say(f"fleet: {worker_label(worker)} is taking batches")
        if 0 < total <= done:
            say(f"fleet: {snap.summary()}")

    return fleet, on_progress


def ingest_sample(settings: Settings, directory: Path) -> IngestReport:
    """Index the sample handbook in ``directory`` as the ``handbook`` collection (the demo)."""
    return build_index(settings, [Source(path=directory, collection="handbook")], progress=True)
