"""Re-index on the `ingest` queue: one run at a time per collection, progress to Slack."""

from __future__ import annotations

import logging
from typing import Any

from lorebot.errors import IngestError, LorebotError
from lorebot.settings import Settings

log = logging.getLogger(__name__)

LOCK_TTL_S = 6 * 3600


def lock_key(collection: str | None) -> str:
    return f"lorebot:lock:reindex:{collection or '*'}"


def reindex_impl(settings: Settings, *, collection: str | None = None, reply: dict | None = None) -> dict[str, Any]:
    """Re-run the recorded sources (of one collection, or all) as an incremental build."""
    import redis

    from ingest import build_index
    from ingest.registry import load_sources

    delivery = None
    if reply:
        from workers.delivery import SlackDelivery

        delivery = SlackDelivery.from_settings(settings, reply)
    r = redis.Redis.from_url(settings.redis.effective_url)
    lock = r.lock(lock_key(collection), timeout=LOCK_TTL_S, blocking=False)
    if not lock.acquire(blocking=False):
        msg = f"a re-index of {collection or 'all collections'} is already running"
        if delivery:
            delivery.update(msg)
        return {"status": "busy", "message": msg}
    try:
        sources = load_sources(settings, collection)
        if not sources:
            raise IngestError(
                f"no recorded sources for {collection or 'any collection'}",
                fix="ingest once with `lorebot ingest PATH --collection NAME`",
            )
        if delivery:
            delivery.progress(f"Re-indexing {len(sources)} source(s) of {collection or 'all collections'}…")
        report = build_index(settings, sources, progress=False)
        summary = (
            f"Index {report.version}: {report.ok} files ok, {report.failed} failed, "
            f"{report.skipped} skipped, {report.chunks_total} chunks in {report.duration_s:.0f} s"
        )
        log.info("reindex collection=%s %s", collection, summary)
        if delivery:
            delivery.update(summary)
        return {"status": "ok", "message": summary, "report": report.to_dict()}
    except LorebotError as exc:
        if delivery:
            delivery.update(f"Re-index failed: {exc.one_line()}")
        return {"status": "failed", "message": exc.one_line()}
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass
