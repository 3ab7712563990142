"""The answer family: answer one question (streamed into Slack when asked), ping, status.

The task parses its payload and calls :func:`answer_impl`, which does the work. Errors
become domain errors: only TransientError is retried; anything else is reported to the
asker (and to Slack when the question came from there).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from celery import Celery

from lorebot import contracts, logs, sync, telemetry
from lorebot.errors import LorebotError, TransientError
from lorebot.settings import Settings
from lorebot.types import Answer, Question, new_id
from workers.runtime import get_runtime

# The answer lines keep the logger name they have always had ("answered index=..." under
# workers.app): operators filter on it and the fleet test reads it.
log = logging.getLogger("workers.app")


def answer_impl(
    settings: Settings, question: Question, reply: contracts.ReplyTarget | dict | None = None
) -> Answer:
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

    The bot shows the document count in its placeholder; operators (``lorebot sync
    status``, :func:`lorebot.sync.serving_workers`) and the sync test read which index and
    adapter versions each worker serves, from the contracts.SERVING hash
    ("<host>:<pid>" -> JSON).
    """
    # adapter: what the loaded model applies; adapter_synced: the local registry's
    # CURRENT after the last pull.
    serving = (
        index.version,
        getattr(runtime._generator, "adapter", None),
        sync.local_current(settings.adapters_dir),
    )
    telemetry.set_serving(serving[0], serving[1])
    if getattr(runtime, "announced", None) == serving:
        return
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


def register(app: Celery, settings: Settings) -> None:
    """Register the answer, ping and status tasks (the answer queue's) on ``app``."""

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
        target = contracts.ReplyTarget.from_dict(reply)
        with logs.bind(question_id=q.question_id, channel=q.channel or (target and target.channel)):
            try:
                result = answer_impl(settings, q, target)
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
