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
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from lorebot import contracts, logs, sync, telemetry
from lorebot.errors import LorebotError, TransientError
from lorebot.settings import Settings
from lorebot.types import Answer, Question, new_id
from workers import client
from workers.runtime import get_runtime
from workers.tasks.ingest import TASK_TIME_LIMIT_S

log = logging.getLogger(__name__)

# Hash: "<host>:<pid>" -> JSON of what that worker process serves (announce()).


def answer_impl(settings: Settings, question: Question, reply: dict | None = None) -> Answer:
    """Answer one question with this process's runtime; stream into Slack when asked."""
    from slm.serving.answer import answer_question

    runtime = get_runtime(settings)
    delivery = None
    if reply:
        from workers.delivery import SlackDelivery, already_delivered

        # A redelivered message (worker lost after Slack took the answer, Redis restarted
        # before the ack) must not answer twice: delivery is keyed by question id.
        earlier = already_delivered(settings, question)
        if earlier is not None:
            log.info("question=%s already delivered; not answering again", question.question_id)
            return earlier
        delivery = SlackDelivery.from_settings(settings, reply)
    try:
        runtime.sync()  # a newer index / adapter from the shared location, if any
        runtime.refresh_adapter()
        index = runtime.index()
        logs.update(
            index_version=index.version,
            adapter_version=getattr(runtime.generator, "adapter", None) or "base",
        )
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
    # adapter: what the loaded model applies; adapter_synced: the local registry's
    # CURRENT after the last pull (they differ only while slm.training.registry is absent).
    serving = (
        index.version,
        getattr(runtime._generator, "adapter", None),
        sync.local_current(settings.adapters_dir),
    )
    telemetry.set_serving(serving[0], serving[1])
    if getattr(runtime, "announced", None) == serving:
        return
    import json

    import redis

    try:
        r = redis.Redis.from_url(settings.redis.effective_url, socket_timeout=2)
        stats = index.stats()
        r.set(contracts.INDEX_DOCUMENTS, stats.get("documents", 0))
        r.hset(
            contracts.SERVING,
            f"{socket.gethostname()}:{os.getpid()}",
            json.dumps(
                {
                    "index": serving[0],
                    "adapter": serving[1],
                    "adapter_synced": serving[2],
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "metrics_port": telemetry.server_port(),
                    "at": time.time(),
                }
            ),
        )
        log.info("serving index=%s adapter=%s adapter_synced=%s", *serving)
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
    from slm.training.registry import current_adapter

    found = current_adapter(settings)
    adapter = found.version if found else None
    return {"index": stats, "adapter": adapter, "worker": socket.gethostname()}


def broker_config(settings: Settings, queues: Sequence[str] | None = None) -> dict[str, Any]:
    """Celery settings for a worker consuming ``queues``.

    A message unacked for longer than the visibility timeout is delivered again. A worker
    that may run a refresh or a re-index keeps it above the longest of those, or a night's
    training would run twice. An answer-only worker keeps its own unacked set with a short
    timeout, so a question held by a worker that died whole is answered within minutes.
    """
    if queues is not None and set(queues) == {contracts.QUEUE_ANSWER}:
        visibility = max(settings.worker.answer_visibility_s, settings.worker.task_timeout_s + 60)
        return client.celery_config(
            settings.redis.effective_url,
            visibility_timeout_s=visibility,
            unacked_namespace=contracts.QUEUE_ANSWER,
        )
    from workers.tasks.refresh import refresh_time_limit_s

    visibility = max(contracts.VISIBILITY_TIMEOUT_S, refresh_time_limit_s(settings) + 1800)
    return client.celery_config(settings.redis.effective_url, visibility_timeout_s=visibility)


def create_app(
    settings: Settings, *, warm: bool = True, queues: Sequence[str] | None = None
) -> Celery:
    """A Celery app bound to these settings, with every lorebot task registered.

    `warm` loads the model and index in each worker process before its first task.
    `queues` are the queues this worker consumes (None: a producer, or any queue).
    """
    from workers.tasks.refresh import refresh_time_limit_s

    app = Celery("lorebot")
    app.conf.update(broker_config(settings, queues))
    refresh_limit = refresh_time_limit_s(settings)
    app.conf.task_time_limit = settings.worker.task_timeout_s
    app.conf.task_soft_time_limit = max(1, settings.worker.task_timeout_s - 5)

    @app.task(
        name=contracts.TASK_ANSWER,
        shared=False,
        bind=True,
        autoretry_for=(TransientError,),
        max_retries=3,
        retry_backoff=True,
    )
    def answer(self, question: dict, reply: dict | None = None) -> dict:
        started = time.perf_counter()
        q = Question.model_validate(question)
        target = contracts.ReplyTarget.from_dict(reply or None)
        with logs.bind(question_id=q.question_id, channel=q.channel or (target and target.channel)):
            try:
                result = answer_impl(settings, q, reply)
            except TransientError:
                if self.request.retries >= self.max_retries:
                    telemetry.record_answer("failed")
                raise
            except LorebotError as exc:
                # A problem the asker can act on (no index, bad model...): a result, not a
                # crash, so the CLI can print the one-line reason and its fix.
                telemetry.record_answer("failed")
                return error_result(q.question_id, exc)
            except Exception:
                telemetry.record_answer("failed")
                raise
        result.timings_ms.setdefault("task", (time.perf_counter() - started) * 1000)
        telemetry.record_answer("abstained" if result.abstained else "answered", result.timings_ms)
        return result.model_dump(mode="json")

    @app.task(name=contracts.TASK_PING, shared=False)
    def ping() -> str:
        return "pong"

    @app.task(name=contracts.TASK_STATUS, shared=False)
    def status() -> dict:
        return status_impl(settings)

    # Builds outlast the answer tasks' time limit by far: ingest tasks get their own.
    ingest_limits = {"time_limit": TASK_TIME_LIMIT_S, "soft_time_limit": TASK_TIME_LIMIT_S - 60}

    @app.task(name=contracts.TASK_REINDEX, shared=False, **ingest_limits)
    def reindex(collection: str | None = None, reply: dict | None = None) -> dict:
        from workers.tasks.ingest import reindex_impl

        return _count_ingest(reindex_impl(settings, collection=collection, reply=reply))

    @app.task(name=contracts.TASK_INGEST_FILES, shared=False, **ingest_limits)
    def ingest_files(
        collection: str, files: list, reply: dict | None = None, defaulted: bool = False
    ) -> dict:
        from workers.tasks.uploads import ingest_files_impl

        return ingest_files_impl(
            settings, collection=collection, files=files, reply=reply, defaulted=defaulted
        )

    @app.task(
        name=contracts.TASK_REFRESH,
        shared=False,
        time_limit=refresh_limit,
        soft_time_limit=refresh_limit - 60,
    )
    def refresh(reply: dict | None = None, scheduled: bool = False) -> dict:
        from workers.tasks.refresh import refresh_impl

        result = refresh_impl(settings, reply=reply, scheduled=scheduled)
        if isinstance(result, dict) and result.get("status") in telemetry.REFRESH_DECISIONS:
            telemetry.record_refresh(
                result["status"]
            )  # "busy" (another run holds the lock) is not a result
        return result

    @app.task(name=contracts.TASK_ADAPTERS, shared=False)
    def adapters(action: str = "list", version: str | None = None) -> dict:
        from workers.tasks.refresh import adapters_impl

        return adapters_impl(settings, action, version)

    def _load_once(**_: Any) -> None:
        # Load the model and index in each child before the first task, so the first
        # question does not pay for it. A missing index is not fatal: tasks report it.
        runtime = get_runtime(settings)
        runtime.sync(force=True)  # a fresh machine fetches the published versions first
        try:
            runtime.generator  # noqa: B018 - warm the lazy property
            # Load MiniLM now too: the first question paid ~7 s for it otherwise.
            runtime.index().encode(["warm up"])
        except LorebotError as exc:
            log.warning("worker start: %s", exc.one_line())

    if warm:
        worker_process_init.connect(_load_once, weak=False)

    def _metrics_start(sender: Any = None, **_: Any) -> None:
        # In the worker's main process, before the pool forks (multiprocess mode).
        if getattr(sender, "app", None) is app:
            telemetry.start_worker_server(settings)

    def _metrics_child_gone(pid: int | None = None, **_: Any) -> None:
        telemetry.child_exit(pid)

    def _metrics_stop(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            telemetry.stop_worker_server()

    worker_init.connect(_metrics_start, weak=False)
    worker_process_shutdown.connect(_metrics_child_gone, weak=False)
    worker_shutdown.connect(_metrics_stop, weak=False)
    return app


def _count_ingest(result: dict) -> dict:
    """Ingest failures for Prometheus: each failed file of the report, or the failed run."""
    try:
        if isinstance(result, dict) and result.get("status") == "failed":
            telemetry.record_ingest_failure("run_failed")
        elif isinstance(result, dict) and isinstance(result.get("report"), dict):
            telemetry.record_ingest_report(result["report"])
    except Exception:  # noqa: BLE001 - metrics never fail an ingest
        log.warning("could not count ingest failures", exc_info=True)
    return result
