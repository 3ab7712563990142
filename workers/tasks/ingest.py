"""Re-index on the `ingest` queue: one run at a time per collection, progress to Slack
and to the task's state.

Progress of a build goes into one thread message that :class:`StageProgress` edits in
place (parsing n/N files, embedding, writing the version), at most once every few
seconds, so a long build shows it is alive without flooding the thread. The same
stages go into the task's result as a ``PROGRESS`` state (:class:`StateProgress`, at
most once a second), which the console's job page shows.

A distributed build (``index.distributed``) shows the fleet: batches done of all, which
workers did them and which are at work now (ingest.report.FleetProgress reads that from
Redis); the end of that stage and the last line name the workers whatever the throttle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot import render
from lorebot import contracts
from lorebot.errors import IngestError, LorebotError
from lorebot.settings import Settings
from workers.delivery import retry_after_s

if TYPE_CHECKING:
    from ingest.report import FleetProgress

log = logging.getLogger(__name__)

#: Hard time limit of an ingest-queue task (the answer tasks' limit is far too short).
TASK_TIME_LIMIT_S = contracts.REINDEX_LOCK_TTL_S - 600
#: Slack sees a build's progress at most this often.
PROGRESS_INTERVAL_S = 3.0
#: The task's PROGRESS state (a Redis write, read by the console) at most this often.
STATE_INTERVAL_S = 1.0

STAGES = {
    "parse": ("parsing", "files"),
    "fleet": ("parsing and embedding on the ingest workers", "files"),
    "embed": ("embedding", "chunks"),
    "write": ("writing the new index version", None),
}


def stage_text(stage: str, done: int, total: int) -> str:
    """'parsing 12/40 files (30%)' for a build_index progress callback."""
    label, unit = STAGES.get(stage, (stage, None))
    if unit is None or total <= 0:
        return label + "…"
    pct = int(100 * done / total)
    return f"{label} {done:,}/{total:,} {unit} ({pct}%)"


class StageProgress:
    """One thread message that follows a build's stages, edited in place and throttled.

    ``build_index`` calls back for every parsed file and every embedding batch; Slack
    gets at most one ``chat.update`` per ``min_interval_s`` (a 429's Retry-After pushes
    the next one further out). The newest text is never lost: :meth:`finish` always
    sends. Slack trouble is logged and never fails the build.
    """

    def __init__(
        self,
        web_client,
        channel: str,
        thread_ts: str,
        *,
        headline: str,
        ts: str | None = None,
        min_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        describe: Callable[[str, int, int], str] = stage_text,
    ) -> None:
        self.web = web_client
        self.describe = describe
        self.channel = channel
        self.thread_ts = thread_ts
        self.headline = headline
        self.min_interval_s = PROGRESS_INTERVAL_S if min_interval_s is None else min_interval_s
        self.clock = clock
        self.ts = ts  # the message being edited: given, or posted on the first report
        self.sent: str | None = None
        self.pending: str | None = None
        self.calls = 0  # Web API calls that succeeded
        self._next_allowed = 0.0
        self._failures = 0

    def _compose(self, line: str | None) -> str:
        return f"{self.headline}\n{line}" if line else self.headline

    def start(self) -> None:
        """Post the message (headline alone) that later stages edit."""
        self._send(self._compose(None))

    def __call__(self, stage: str, done: int, total: int) -> None:
        # The end of the fleet stage says which workers built the version: never dropped.
        last_of_fleet = stage == "fleet" and 0 < total <= done
        self.report(self.describe(stage, done, total), force=last_of_fleet)

    def report(self, line: str, *, force: bool = False) -> None:
        text = self._compose(line)
        self.pending = text
        # Forced past the interval, never into a Retry-After that Slack asked for.
        if (force and not self._failures) or self.clock() >= self._next_allowed:
            self._send(text)

    def finish(self, line: str) -> None:
        """The last state of the message, sent whatever the throttle says."""
        self._send(self._compose(line))

    def _send(self, text: str) -> None:
        if text == self.sent:
            return
        try:
            if self.ts is None:
                resp = self.web.chat_postMessage(
                    channel=self.channel, thread_ts=self.thread_ts, **render.notice(text)
                )
                self.ts = resp["ts"]
            else:
                self.web.chat_update(channel=self.channel, ts=self.ts, **render.notice(text))
            self.sent, self.pending = text, None
            self.calls += 1
            self._failures = 0
            self._next_allowed = self.clock() + self.min_interval_s
        except Exception as exc:
            wait = retry_after_s(exc)
            self._failures += 1
            backoff = self.min_interval_s * min(2**self._failures, 20)
            self._next_allowed = self.clock() + max(wait or 0.0, backoff)
            log.warning("progress update in channel=%s failed: %s", self.channel, exc)


class StateProgress:
    """A build's stages as the task's ``PROGRESS`` state, throttled.

    ``update_state`` is the bound task's (``state=..., meta=...``). A new stage is
    always reported, so a short build still shows each stage it went through; counts
    within a stage at most once per ``min_interval_s``. A failing result backend is
    logged and never fails the build.
    """

    def __init__(
        self,
        update_state: Callable[..., Any],
        *,
        min_interval_s: float = STATE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.update_state = update_state
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.calls = 0
        self._stage: str | None = None
        self._next_allowed = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if stage == self._stage and now < self._next_allowed:
            return
        self._stage, self._next_allowed = stage, now + self.min_interval_s
        try:
            self.update_state(
                state="PROGRESS", meta={"stage": stage, "done": int(done), "total": int(total)}
            )
            self.calls += 1
        except Exception as exc:  # noqa: BLE001 - progress never fails a build
            log.warning("could not record re-index progress: %s", exc)


def _both(*callbacks: Callable[[str, int, int], None] | None):
    """One progress callback that calls each of ``callbacks`` that is given (or None)."""
    given = [cb for cb in callbacks if cb is not None]
    if not given:
        return None

    def report(stage: str, done: int, total: int) -> None:
        for cb in given:
            cb(stage, done, total)

    return report


def fleet_stage_text(fleet: FleetProgress | None) -> Callable[[str, int, int], str]:
    """:func:`stage_text`, with the fleet's batches and workers in the "fleet" stage."""

    def describe(stage: str, done: int, total: int) -> str:
        if stage != "fleet" or fleet is None:
            return stage_text(stage, done, total)
        # Worker names come from Redis records: escaped like any text from outside.
        return f"{STAGES['fleet'][0]}: {render.escape(fleet.line(done, total))}"

    return describe


def stage_progress(
    delivery, headline: str, fleet: FleetProgress | None = None
) -> StageProgress | None:
    """A StageProgress in the thread of a SlackDelivery (None without one)."""
    if delivery is None:
        return None
    thread_ts = delivery.reply.thread
    return StageProgress(
        delivery.web,
        delivery.channel,
        thread_ts,
        headline=headline,
        describe=fleet_stage_text(fleet),
    )


def reindex_impl(
    settings: Settings,
    *,
    collection: str | None = None,
    reply: contracts.ReplyTarget | dict | None = None,
    on_stage: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Re-run the recorded sources (of one collection, or all) as an incremental build.

    ``on_stage(stage, done, total)`` follows the build besides the Slack thread (the
    task hands in its :class:`StateProgress`).
    """
    import redis

    from ingest import build_index
    from ingest.registry import load_sources

    delivery = None
    if reply:
        from workers.delivery import SlackDelivery

        delivery = SlackDelivery.from_settings(settings, reply)
    r = redis.Redis.from_url(settings.redis.effective_url)
    lock = r.lock(
        contracts.reindex_lock(collection), timeout=contracts.REINDEX_LOCK_TTL_S, blocking=False
    )
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
        what = collection or "all collections"
        fleet = None
        if settings.index.distributed:
            from ingest.distributed import celery_dispatch
            from ingest.report import FleetProgress

            fleet = FleetProgress(r, celery_dispatch(settings))
        progress = stage_progress(
            delivery, f"Re-indexing {len(sources)} source(s) of {what}…", fleet
        )
        if progress:
            progress.start()
        try:
            report = build_index(
                settings,
                sources,
                progress=False,
                on_progress=_both(fleet, progress, on_stage),
                dispatch=fleet.dispatch if fleet else None,
            )
        except LorebotError as exc:
            if progress:
                progress.finish(f"stopped: {exc.message}")
            raise
        summary = (
            f"Index {report.version}: {report.ok} files ok, {report.failed} failed, "
            f"{report.skipped} skipped, {report.chunks_total} chunks in {report.duration_s:.0f} s"
        )
        log.info("reindex collection=%s %s", collection, summary)
        built_by = fleet.last if fleet is not None and fleet.last.done else None
        by_text = render.escape(built_by.summary()) if built_by is not None else ""
        if by_text:
            summary += f"; built by the fleet: {by_text}"
        if progress:
            progress.finish(
                f"done in {report.duration_s:.0f} s"
                + ("" if report.new_version else " (nothing changed)")
                + (f": {by_text}" if by_text else "")
            )
        if delivery:
            delivery.update(summary)
        result = {"status": "ok", "message": summary, "report": report.to_dict()}
        if built_by is not None:
            result["fleet"] = built_by.to_dict()
        return result
    except LorebotError as exc:
        if delivery:
            delivery.update(f"Re-index failed: {exc.one_line()}")
        return {"status": "failed", "message": exc.one_line()}
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass


#: This process's parse pool and embedder for batch tasks, made on the first batch.
_BATCH_TOOLS: dict[str, Any] = {}


def ingest_batch_impl(settings: Settings, spec: dict[str, Any]) -> dict[str, Any]:
    """Run one batch of a distributed build (ingest.distributed.run_batch) in this process."""
    import redis

    from ingest.distributed import run_batch

    def embedder():
        if "embedder" not in _BATCH_TOOLS:
            from ingest.embed import Embedder

            _BATCH_TOOLS["embedder"] = Embedder.from_settings(settings, exclusive=True)
        return _BATCH_TOOLS["embedder"]

    def pool():
        if "pool" not in _BATCH_TOOLS:
            from ingest.build import make_parse_pool

            _BATCH_TOOLS["pool"] = make_parse_pool(
                settings.index.parse_workers or 1,
                settings.index.file_timeout_s,
                memory_mb=settings.index.parse_memory_mb,
            )
        return _BATCH_TOOLS["pool"]

    r = redis.Redis.from_url(settings.redis.effective_url)
    try:
        return run_batch(settings, spec, redis_client=r, embedder=embedder, pool=pool)
    finally:
        r.close()


def register(app: Any, settings: Settings) -> None:
    """Register the ``reindex`` and ``ingest_batch`` tasks (ingest queue) on ``app``."""

    @app.task(
        name=contracts.TASK_INGEST_BATCH,
        shared=False,
        ignore_result=True,
        time_limit=TASK_TIME_LIMIT_S,
        soft_time_limit=TASK_TIME_LIMIT_S - 60,
    )
    def ingest_batch(spec: dict) -> dict:
        return ingest_batch_impl(settings, spec)

    @app.task(
        bind=True,
        name=contracts.TASK_REINDEX,
        shared=False,
        time_limit=TASK_TIME_LIMIT_S,
        soft_time_limit=TASK_TIME_LIMIT_S - 60,
    )
    def reindex(self, collection: str | None = None, reply: dict | None = None) -> dict:
        result = reindex_impl(
            settings,
            collection=collection,
            reply=reply,
            on_stage=StateProgress(self.update_state),
        )
        return _count_ingest(result)


def _count_ingest(result: dict) -> dict:
    """Ingest failures for Prometheus: each failed file of the report, or the failed run."""
    from lorebot import telemetry

    try:
        if isinstance(result, dict) and result.get("status") == "failed":
            telemetry.record_ingest_failure("run_failed")
        elif isinstance(result, dict) and isinstance(result.get("report"), dict):
            telemetry.record_ingest_report(result["report"])
    except Exception:  # noqa: BLE001 - metrics never fail an ingest
        log.warning("could not count ingest failures", exc_info=True)
    return result
