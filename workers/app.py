"""The Celery app factory and the thin tasks registered on it.

Each task parses its payload, calls one ``*_impl`` function that does the work, and
reports. Errors become domain errors: only TransientError is retried; anything else is
reported to the asker (and to Slack when the question came from there).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from lorebot.errors import LorebotError, TransientError
from lorebot.settings import Settings
from lorebot.types import Answer, Question, new_id
from workers import client
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


def answer_impl(settings: Settings, question: Question, reply: dict | None = None) -> Answer:
    """Answer one question with this process's runtime; stream into Slack when asked."""
    from slm.answer import answer_question

    runtime = get_runtime(settings)
    delivery = None
    if reply:
        from workers.delivery import SlackDelivery

        delivery = SlackDelivery.from_settings(settings, reply)
    try:
        runtime.refresh_adapter()
        index = runtime.index()
        announce(settings, runtime, index)
        result = answer_question(
            question,
            index,
            runtime.generator,
            retrieval=settings.retrieval,
            model=settings.model,
            on_token=delivery.on_token if delivery else None,
        )
    except LorebotError as exc:
        log.warning("question=%s failed: %s", question.question_id, exc.one_line())
        if delivery:
            delivery.fail(exc.one_line(), question.question_id)
        raise
    except Exception as exc:
        ref = new_id()
        log.exception("question=%s ref=%s unexpected error", question.question_id, ref)
        if delivery:
            delivery.fail(f"internal error ({type(exc).__name__})", ref)
        raise
    if delivery:
        delivery.finish(result)
    log.info(
        "question=%s answered index=%s adapter=%s abstained=%s total_ms=%.0f",
        question.question_id,
        result.index_version,
        result.adapter,
        result.abstained,
        result.timings_ms.get("total", 0.0),
    )
    return result


def announce(settings: Settings, runtime: Any, index: Any) -> None:
    """Tell Redis what this worker serves (once per index version/adapter).

    The bot shows the document count in its placeholder; operators and the sync test
    read which index and adapter versions each worker serves.
    """
    serving = (index.version, getattr(runtime._generator, "adapter", None))
    if getattr(runtime, "announced", None) == serving:
        return
    import json

    import redis

    from bot import keys

    try:
        r = redis.Redis.from_url(settings.redis.effective_url, socket_timeout=2)
        stats = index.stats()
        r.set(keys.INDEX_DOCUMENTS, stats.get("documents", 0))
        r.hset(
            "lorebot:workers:serving",
            f"{socket.gethostname()}:{os.getpid()}",
            json.dumps({"index": serving[0], "adapter": serving[1], "at": time.time()}),
        )
        runtime.announced = serving
    except redis.RedisError as exc:  # never fail a question over a status line
        log.warning("could not announce index %s: %s", index.version, exc)


def error_result(question_id: str, exc: LorebotError) -> dict[str, Any]:
    """The task result that carries a domain error back to the asker."""
    return {
        "question_id": question_id,
        "error": {"type": type(exc).__name__, "message": exc.message, "fix": exc.fix},
    }


def status_impl(settings: Settings) -> dict[str, Any]:
    """What this worker serves: index statistics and adapter version."""
    runtime = get_runtime(settings)
    try:
        stats = runtime.index().stats()
    except LorebotError:
        stats = None
    adapter, _ = None, None
    try:
        from slm.registry import current_adapter

        found = current_adapter(settings)
        adapter = found.version if found else None
    except ImportError:
        pass
    return {"index": stats, "adapter": adapter, "worker": socket.gethostname()}


def create_app(settings: Settings, *, warm: bool = True) -> Celery:
    """A Celery app bound to these settings, with every lorebot task registered.

    `warm` loads the model and index in each worker process before its first task.
    """
    app = Celery("lorebot")
    app.conf.update(client.celery_config(settings.redis.effective_url))
    app.conf.task_time_limit = settings.worker.task_timeout_s
    app.conf.task_soft_time_limit = max(1, settings.worker.task_timeout_s - 5)

    @app.task(name=client.TASK_ANSWER, bind=True, autoretry_for=(TransientError,), max_retries=3, retry_backoff=True)
    def answer(self, question: dict, reply: dict | None = None) -> dict:
        started = time.perf_counter()
        q = Question.model_validate(question)
        try:
            result = answer_impl(settings, q, reply)
        except TransientError:
            raise
        except LorebotError as exc:
            # A problem the asker can act on (no index, bad model...): a result, not a
            # crash, so the CLI can print the one-line reason and its fix.
            return error_result(q.question_id, exc)
        result.timings_ms.setdefault("task", (time.perf_counter() - started) * 1000)
        return result.model_dump(mode="json")

    @app.task(name=client.TASK_PING)
    def ping() -> str:
        return "pong"

    @app.task(name=client.TASK_STATUS)
    def status() -> dict:
        return status_impl(settings)

    @app.task(name=client.TASK_REINDEX)
    def reindex(collection: str | None = None, reply: dict | None = None) -> dict:
        from workers.ingest_tasks import reindex_impl

        return reindex_impl(settings, collection=collection, reply=reply)

    def _load_once(**_: Any) -> None:
        # Load the model and index in each child before the first task, so the first
        # question does not pay for it. A missing index is not fatal: tasks report it.
        runtime = get_runtime(settings)
        try:
            runtime.generator  # noqa: B018 - warm the lazy property
            runtime.index()
        except LorebotError as exc:
            log.warning("worker start: %s", exc.one_line())

    if warm:
        worker_process_init.connect(_load_once, weak=False)
    return app
