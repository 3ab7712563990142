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
import threading
import time
from typing import Any

from celery import Celery

from lorebot import contracts, logs, payloads, recent, sync, telemetry
from lorebot.errors import InvalidPayloadError, LorebotError, TransientError
from lorebot.settings import Settings
from lorebot.types import Answer, Question, new_id
from workers.runtime import get_runtime, load_now

# The answer lines keep the logger name they have always had ("answered index=..." under
# workers.app): operators filter on it and the fleet test reads it.
log = logging.getLogger("workers.app")


def answer_impl(
    settings: Settings, question: Question, reply: contracts.ReplyTarget | dict | None = None
) -> Answer:
    """Answer one question with this process's runtime; stream into Slack when asked."""
    from slm.serving.answer import answer_question
    from slm.serving.reviewed import for_settings as reviewed_answers

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
        question = scoped(settings, question, reply)
        runtime.sync()  # a newer index / adapter from the shared location, if any
        # Only an adapter trained on collections this question may search (issue 14, item 3).
        runtime.refresh_adapter(question.collections)
        # What this question paid for loading (index reopened after a re-index, the
        # embedder or the model after a start or an adapter change); ~0 once warm.
        t_index = time.perf_counter()
        index = runtime.index()
        loads = {"index_load": (time.perf_counter() - t_index) * 1000}
        loads["embedder_load"] = load_now(getattr(index, "embedder", None))
        loads["model_load"] = load_now(runtime.generator)
        logs.update(
            index_version=index.version,
            adapter_version=getattr(runtime.generator, "adapter", None) or "base",
        )
        announce(settings, runtime, index)
        from workers.asker import asker_view

        # Documents of answer-as-the-asker sources: only those this user may read there.
        retriever = asker_view(settings, index, question, contracts.ReplyTarget.from_dict(reply))
        result = answer_question(
            question,
            retriever,
            runtime.generator,
            retrieval=settings.retrieval,
            model=settings.model,
            on_token=delivery.on_token if delivery else None,
            # corrections an admin accepted, as the last refresh published them
            reviewed=reviewed_answers(settings),
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
    result.timings_ms.update(loads)
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


_access_redis: dict[str, Any] = {}


def scoped(settings: Settings, question: Question, reply: Any) -> Question:
    """The question with the collections its reply channel is mapped to (lorebot.access).

    The payload's own collections are not trusted for a question answered into Slack;
    Redis is read for the run-time overrides of ``/lorebot channel set``.
    """
    target = contracts.ReplyTarget.from_dict(reply)
    if target is None:
        return question
    import redis

    url = settings.redis.effective_url
    client = _access_redis.get(url)
    if client is None:
        client = _access_redis[url] = redis.Redis.from_url(url, socket_timeout=5)
    try:
        result = payloads.scope_question(client, settings.slack, question, target)
    except redis.RedisError as exc:
        raise TransientError(
            f"cannot read the channel mapping from Redis: {type(exc).__name__}",
            fix="check that Redis is running (lorebot doctor)",
        ) from exc
    if question.collections != result.collections:
        log.info(
            "question=%s channel=%s searches %s (the mapping), not the payload's %s",
            question.question_id,
            target.channel,
            result.collections,
            question.collections,
        )
    return result


def log_recent(
    settings: Settings,
    question: Question,
    reply: contracts.ReplyTarget | None,
    *,
    result: Answer | None = None,
    error: str | None = None,
) -> None:
    """Append the question's entry to the console's log of recent answers (lorebot.recent)."""
    import redis

    url = settings.redis.effective_url
    client = _access_redis.get(url)
    if client is None:
        client = _access_redis[url] = redis.Redis.from_url(url, socket_timeout=5)
    fields = recent.entry(question, result, channel=reply.channel if reply else None, error=error)
    recent.append(client, fields)


def _serving_field() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _write_serving(r: Any, entry: dict[str, Any]) -> None:
    """Write this process's entry with a fresh heartbeat, and drop entries that lost theirs.

    Every restart of a worker process is a new "<host>:<pid>": without the pruning the
    hash would grow by one entry per restart, forever.
    """
    now = time.time()
    entry = {**entry, "at": now}
    r.hset(contracts.SERVING, _serving_field(), json.dumps(entry))
    stale = []
    for name, raw in r.hgetall(contracts.SERVING).items():
        try:
            at = float(json.loads(raw).get("at") or 0)
        except (ValueError, TypeError, AttributeError):
            at = 0.0
        if now - at > contracts.SERVING_TTL_S:
            stale.append(name)
    if stale:
        r.hdel(contracts.SERVING, *stale)


def announce(settings: Settings, runtime: Any, index: Any) -> None:
    """Tell Redis what this worker serves (when it changes, and as a heartbeat).

    The bot shows the document count in its placeholder; operators (``lorebot sync
    status``, :func:`lorebot.sync.serving_workers`) and the sync test read which index and
    adapter versions each worker serves, from the contracts.SERVING hash
    ("<host>:<pid>" -> JSON). Entries carry the time of their last heartbeat
    (:func:`heartbeat`); entries older than contracts.SERVING_TTL_S are deleted here.
    """
    # adapter: what the loaded model applies; adapter_synced: the local registry's
    # CURRENT after the last pull.
    serving = (
        index.version,
        getattr(runtime._generator, "adapter", None),
        sync.local_current(settings.adapters_dir),
    )
    telemetry.set_serving(serving[0], serving[1])
    fresh = time.time() - getattr(runtime, "announced_at", 0.0) < contracts.SERVING_HEARTBEAT_S
    if getattr(runtime, "announced", None) == serving and fresh:
        return
    import redis

    try:
        r = redis.Redis.from_url(settings.redis.effective_url, socket_timeout=2)
        stats = index.stats()
        r.set(contracts.INDEX_DOCUMENTS, stats.get("documents", 0))
        entry = {
            "index": serving[0],
            "adapter": serving[1],
            "adapter_synced": serving[2],
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "metrics_port": telemetry.server_port(),
        }
        _write_serving(r, entry)
        if getattr(runtime, "announced", None) != serving:
            log.info("serving index=%s adapter=%s adapter_synced=%s", *serving)
        runtime.announced = serving
        runtime.announced_entry = entry
        runtime.announced_at = time.time()
    except redis.RedisError as exc:  # never fail a question over a status line
        log.warning("could not announce index %s: %s", index.version, exc)


def heartbeat(settings: Settings, runtime: Any) -> None:
    """Refresh this process's SERVING entry (an idle worker is still serving)."""
    entry = getattr(runtime, "announced_entry", None)
    if entry is None:
        return
    import redis

    try:
        _write_serving(redis.Redis.from_url(settings.redis.effective_url, socket_timeout=2), entry)
        runtime.announced_at = time.time()
    except redis.RedisError as exc:
        log.warning("serving heartbeat failed: %s", exc)


def withdraw(settings: Settings, runtime: Any) -> None:
    """Remove this process's SERVING entry (a clean exit)."""
    if getattr(runtime, "announced_entry", None) is None:
        return
    import redis

    try:
        r = redis.Redis.from_url(settings.redis.effective_url, socket_timeout=2)
        r.hdel(contracts.SERVING, _serving_field())
        runtime.announced_entry = None
    except redis.RedisError as exc:
        log.warning("could not withdraw the serving entry: %s", exc)


def start_heartbeat(settings: Settings, runtime: Any) -> threading.Event:
    """A daemon thread calling :func:`heartbeat` every contracts.SERVING_HEARTBEAT_S."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(contracts.SERVING_HEARTBEAT_S):
            heartbeat(settings, runtime)

    threading.Thread(target=loop, name="serving-heartbeat", daemon=True).start()
    return stop


def task_result(result: Answer, reply: contracts.ReplyTarget | None) -> dict[str, Any]:
    """What the answer task returns (Celery keeps it in Redis for result_expires).

    A question from Slack gets the compact answer (the watchdog renders it; passages are
    cut to their snippet); `lorebot ask` (no reply target) gets the full passages.
    """
    return (result.compact() if reply is not None else result).model_dump(mode="json")


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
        try:
            q, target = payloads.check_answer_payload(
                question,
                reply,
                max_chars=settings.slack.max_question_chars,
                max_turns=settings.slack.history_turns,
            )
        except InvalidPayloadError as exc:
            # Written by someone other than the bot or the CLI: no Slack reply (its target
            # is part of what is not trusted), one log line without the payload itself.
            log.warning("task=%.64r refused: %s", self.request.id, exc.message)
            telemetry.record_answer("failed")
            return error_result(str(self.request.id)[:64], exc)
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
                log_recent(settings, q, target, error=exc.one_line())
                return error_result(q.question_id, exc)
            except Exception:
                telemetry.record_answer("failed")
                raise
        result.timings_ms.setdefault("task", (time.perf_counter() - started) * 1000)
        telemetry.record_answer("abstained" if result.abstained else "answered", result.timings_ms)
        log_recent(settings, q, target, result=result)
        return task_result(result, target)

    @app.task(name=contracts.TASK_PING, shared=False)
    def ping() -> str:
        return "pong"

    @app.task(name=contracts.TASK_STATUS, shared=False)
    def status() -> dict:
        return status_impl(settings)
