"""The bot's only door to the workers: submit tasks by name, read their state, ping.

Built on :func:`workers.client.make_client`, a Celery app that knows task names but no
task code, so the bot never imports the model or the index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from lorebot.errors import AnswerTimeoutError, ServiceUnavailableError
from workers import client as wc

log = logging.getLogger(__name__)

#: ``enqueue(task_name, kwargs, queue, task_id)``: how listeners submit work.
Enqueue = Callable[[str, dict, str, "str | None"], Any]


class WorkerGateway:
    """Celery client wrapper; the Celery app is created on first use, by one thread.

    Bolt runs listeners on a thread pool, so the first burst of questions after a start
    reaches ``app`` from several threads at once. Celery's package is a lazy module that
    fails ("cannot import name 'Celery'") when first imported by several threads
    together, so creation is serialised.
    """

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._app = None
        self._app_lock = threading.Lock()

    @property
    def app(self):
        if self._app is None:
            with self._app_lock:
                if self._app is None:
                    self._app = wc.make_client(self.redis_url)
        return self._app

    def send(self, name: str, kwargs: dict, queue: str, task_id: str | None = None) -> str:
        """Submit a task by name; ServiceUnavailableError when the broker is unreachable."""
        try:
            result = self.app.send_task(name, kwargs=kwargs, queue=queue, task_id=task_id)
        except Exception as exc:  # kombu raises many connection error types
            raise ServiceUnavailableError(
                f"cannot submit {name} to the {queue} queue: {type(exc).__name__}",
                fix="check that Redis is running (lorebot doctor)",
            ) from exc
        return result.id

    def state(self, task_id: str) -> tuple[str, Any]:
        """(Celery state, result or exception) of a task, from the result backend."""
        res = self.app.AsyncResult(task_id)
        state = res.state
        return state, (res.result if state in ("SUCCESS", "FAILURE") else None)

    def call(
        self, name: str, queue: str, *, kwargs: dict | None = None, timeout: float = 5.0
    ) -> Any:
        """Submit and wait for the result (admin commands), with a bounded wait."""
        # Polls the result key instead of AsyncResult.get(): no pub/sub subscription is
        # left behind in this long-lived process when the wait times out.
        task_id = self.send(name, kwargs or {}, queue)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state, result = self.state(task_id)
            if state == "SUCCESS":
                return result
            if state in ("FAILURE", "REVOKED"):
                raise ServiceUnavailableError(
                    f"{name} failed on the worker ({type(result).__name__ if result else state})",
                    fix="see the worker log",
                )
            time.sleep(0.1)
        try:
            self.app.control.revoke(task_id)
        except Exception as exc:  # the broker is gone too; nothing left to cancel
            log.info("could not revoke %s %s: %s", name, task_id, exc)
        raise AnswerTimeoutError(
            f"no worker answered {name} within {timeout:.0f} s",
            fix="check `lorebot doctor`; workers may all be busy or stopped",
        )

    def ping(self, timeout: float = 1.0) -> list[str]:
        """Hostnames of live workers (Celery's broadcast ping); [] when none answer."""
        try:
            replies = self.app.control.ping(timeout=timeout) or []
        except Exception as exc:  # broker down: nobody is alive as far as we can tell
            log.warning("worker ping failed: %s", exc)
            return []
        return sorted(name for reply in replies for name in reply)
