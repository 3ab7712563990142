"""Remote sources on the `ingest` queue: sync one source, or every source that is due.

Beat sends ``source_sync`` without a name every ``sources.check_every_s`` seconds; the
task then syncs each source whose cron schedule has come round since its last sync
(ingest.connectors.sync.due_sources), so sources added with ``lorebot source add`` are
scheduled without restarting beat. The work is ingest.connectors.sync's; this module
only turns its outcome into a result and its domain errors into statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from lorebot import contracts
from lorebot.errors import IndexBusyError, LorebotError
from lorebot.settings import Settings
from workers.tasks.ingest import TASK_TIME_LIMIT_S, StateProgress, _count_ingest

log = logging.getLogger(__name__)

#: The beat entry that looks for due sources.
BEAT_ENTRY = "sources-due"
#: A sync that found the index busy (another build) is tried again after this long.
BUSY_RETRY_S = 120


def sync_impl(
    settings: Settings,
    name: str | None = None,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Sync ``name`` (or every due source); one result per source, never raising for one.
    ``on_progress`` gets each build's stages (the task's PROGRESS state, which the
    console's job page shows)."""
    from ingest.connectors.sync import due_sources, sync_source

    names = [name] if name else due_sources(settings)
    results = []
    for n in names:
        try:
            report = sync_source(settings, n, on_progress=on_progress)
            result = report.to_dict()
            _count_ingest({"status": "ok", "report": report.build} if report.build else {})
        except IndexBusyError as exc:
            result = {"source": n, "status": "busy", "message": exc.one_line()}
        except LorebotError as exc:
            log.warning("source %s: sync failed: %s", n, exc.one_line())
            result = {"source": n, "status": "failed", "message": exc.one_line()}
        results.append(result)
    statuses = {r.get("status") for r in results}
    overall = "failed" if "failed" in statuses else "busy" if "busy" in statuses else "ok"
    return {"status": overall, "sources": results}


def beat_entries(settings: Settings) -> dict[str, Any]:
    """The one beat entry of the sources: look for due sources every check_every_s."""
    return {
        BEAT_ENTRY: {
            "task": contracts.TASK_SOURCE_SYNC,
            "schedule": float(settings.sources.check_every_s),
            "kwargs": {"name": None},
            "options": {"queue": contracts.QUEUE_INGEST},
        }
    }


def register(app: Any, settings: Settings) -> None:
    """Register ``source_sync`` (ingest queue) and add its beat entry when beat starts."""
    from celery.signals import beat_init

    @app.task(
        name=contracts.TASK_SOURCE_SYNC,
        shared=False,
        bind=True,
        time_limit=TASK_TIME_LIMIT_S,
        soft_time_limit=TASK_TIME_LIMIT_S - 60,
    )
    def source_sync(self: Any, name: str | None = None) -> dict:
        result = sync_impl(settings, name, on_progress=StateProgress(self.update_state))
        if name and result["status"] == "busy" and self.request.retries < 5:
            raise self.retry(countdown=BUSY_RETRY_S)
        return result

    def _schedule(sender: Any = None, **_: Any) -> None:
        # Beat's schedule is set by whoever starts beat; the sources' entry joins it here,
        # for the beat of this app only.
        if getattr(sender, "app", None) is app:
            sender.scheduler.update_from_dict(beat_entries(settings))

    beat_init.connect(_schedule, weak=False)
