"""Plain functions behind the worker commands: ``lorebot worker``, ``beat``, ``ask``,
``refresh`` and ``adapters``, and the worker checks of ``health`` and ``demo``.

:mod:`lorebot.cli` loads the settings, checks Redis and calls these; they raise lorebot's
domain errors, which the CLI prints as one line. Importing this module is cheap: the
Celery app, the tasks and the model load inside the functions that need them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from lorebot.contracts import QUEUE_ANSWER, QUEUE_CONTROL, QUEUE_TRAIN, TASK_ANSWER, TASK_REFRESH
from lorebot.errors import (
    AnswerTimeoutError,
    ConfigError,
    LorebotError,
    ServiceUnavailableError,
)
from lorebot.settings import Settings
from lorebot.types import Answer, Question
from workers.client import make_client


def run_worker(settings: Settings, queues: str, loglevel: str = "INFO") -> None:
    """Run a Celery worker on ``queues`` (comma-separated) until it is stopped.

    An answer worker loads the model and index in each process before its first task.
    """
    from lorebot import sync
    from workers.app import create_app

    # Sync without keys would serve whatever anyone wrote to the shared location.
    sync.check_config(settings)
    names = queues.split(",")
    if QUEUE_CONTROL in names and sync.enabled(settings) and settings.sync.signing_key is None:
        # This machine pulls the registry; a promote / rollback here could not be published.
        raise ConfigError(
            "this worker cannot take the control queue: it has no sync signing key",
            fix="run the control queue where the adapter registry is published from, "
            "or set LOREBOT_SYNC__SIGNING_KEY",
        )
    celery = create_app(settings, warm=QUEUE_ANSWER in names, queues=names)
    name = "lorebot-" + queues.replace(",", "-") + f"-{os.getpid()}@%h"
    celery.worker_main(
        [
            "worker",
            "-Q",
            queues,
            "-c",
            str(settings.worker.concurrency),
            "--loglevel",
            loglevel,
            "-n",
            name,
            "--without-gossip",
            "--without-mingle",
        ]
    )


def run_beat(settings: Settings, loglevel: str = "INFO") -> None:
    """Run Celery beat with the nightly schedule until it is stopped."""
    from workers.app import create_app
    from workers.schedule import beat_schedule

    celery = create_app(settings, warm=False)
    celery.conf.beat_schedule = beat_schedule(settings)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    celery.start(
        ["beat", "--loglevel", loglevel, "-s", str(settings.run_dir / "celerybeat-schedule")]
    )


def ping_workers(settings: Settings, timeout: float = 2.0) -> list[str]:
    """The node names ("lorebot-answer-123@host") of the workers that answer a ping."""
    replies = make_client(settings.redis.effective_url).control.ping(timeout=timeout) or []
    return [name for reply in replies for name in reply]


def wait_for_worker(
    settings: Settings, timeout: float, poll: Callable[[], Any] | None = None
) -> bool:
    """True once a worker answers a ping (it loads the model first); False after ``timeout``.

    ``poll`` runs before each ping (the CLI checks its child processes there).
    """
    client = make_client(settings.redis.effective_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        if client.control.ping(timeout=1.0, limit=1):
            return True
    return False


def ask(settings: Settings, question: Question, timeout: float) -> Answer:
    """Send a question through Redis to a worker and wait for the answer.

    The answer's ``timings_ms`` gain ``roundtrip``: task submitted -> result received.
    """
    from celery.exceptions import TimeoutError as CeleryTimeout

    client = make_client(settings.redis.effective_url)
    # A broadcast ping collects replies until its timeout unless told how many to expect:
    # without limit=1 every question waited the whole 1.5 s even with a worker up.
    if not client.control.ping(timeout=1.5, limit=1):
        raise ServiceUnavailableError(
            "no lorebot worker is running", fix="start one with `lorebot up` or `lorebot worker`"
        )
    submitted = time.perf_counter()
    result = client.send_task(
        TASK_ANSWER,
        kwargs={"question": question.model_dump(mode="json"), "reply": None},
        queue=QUEUE_ANSWER,
        task_id=question.question_id,
    )
    try:
        payload = result.get(timeout=timeout, propagate=True)
    except CeleryTimeout:
        raise AnswerTimeoutError(
            f"no answer within {timeout:.0f} s (question id {question.question_id})",
            fix="check `lorebot doctor` and the worker log; raise LOREBOT_WORKER__ASK_TIMEOUT_S",
        ) from None
    roundtrip = (time.perf_counter() - submitted) * 1000
    if isinstance(payload, dict) and "error" in payload:
        err = payload["error"]
        raise LorebotError(err["message"], fix=err.get("fix"))
    answer = Answer.model_validate(payload)
    answer.timings_ms["roundtrip"] = roundtrip
    return answer


def enqueue_refresh(settings: Settings) -> str:
    """Queue a model refresh for a worker on the train queue; the task id."""
    task = make_client(settings.redis.effective_url).send_task(
        TASK_REFRESH, kwargs={"reply": None}, queue=QUEUE_TRAIN
    )
    return task.id


def refresh_now(
    settings: Settings, progress: Callable[[str, str, bool], None] | None = None
) -> dict[str, Any]:
    """Run one model refresh in this process (under the refresh lock).

    Returns {status, message, report?}; ``progress(step, message, detail)`` follows it.
    """
    from workers.tasks.refresh import refresh_impl

    return refresh_impl(settings, progress=progress)


def refresh_report(report: dict[str, Any]) -> Any:
    """The rich tables of a refresh report (the ``report`` of :func:`refresh_now`)."""
    from workers.tasks.refresh import report_renderable

    return report_renderable(report)


def adapters(
    settings: Settings, action: str, version: str | None = None, scope: str | None = None
) -> dict[str, Any]:
    """``list``, ``promote VERSION`` or ``rollback`` the LoRA adapters (of ``scope``'s
    registry; None = the root one): {text, adapters?, current?, error?}."""
    from workers.tasks.refresh import adapters_impl

    return adapters_impl(settings, action, version, scope)
