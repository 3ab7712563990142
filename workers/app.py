"""The Celery app factory: configuration, every task family registered from its module.

Each family lives in ``workers/tasks/`` and registers its tasks with ``register(app,
settings)``: answer (answer, ping, status), ingest (reindex), uploads (ingest_files) and
refresh (refresh, adapters). Tasks are never shared with other Celery apps in the process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery, Task
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from lorebot import contracts, payloads, telemetry
from lorebot.errors import LorebotError
from lorebot.settings import Settings
from workers import client
from workers.runtime import get_runtime, load_now
from workers.tasks import answer, ingest, refresh, sources, uploads
from workers.tasks.ingest import _count_ingest  # noqa: F401 - tests/ops/test_metrics imports it

log = logging.getLogger(__name__)

#: The task families, registered in this order.
TASK_FAMILIES = (answer, ingest, uploads, refresh, sources)


def broker_config(settings: Settings, queues: Sequence[str] | None = None) -> dict[str, Any]:
    """Celery settings for a worker consuming ``queues``.

    A message unacked for longer than the visibility timeout is delivered again. A worker
    that may run a refresh or a re-index keeps it above the longest of those, or a night's
    training would run twice. An answer-only worker keeps its own unacked set with a short
    timeout, so a question held by a worker that died whole is answered within minutes.
    """
    answer_only = {contracts.QUEUE_ANSWER, contracts.QUEUE_CONTROL}
    if queues is not None and contracts.QUEUE_ANSWER in queues and set(queues) <= answer_only:
        visibility = max(settings.worker.answer_visibility_s, settings.worker.task_timeout_s + 60)
        config = client.celery_config(
            settings.redis.effective_url,
            visibility_timeout_s=visibility,
            unacked_namespace=contracts.QUEUE_ANSWER,
        )
        # One result per question: kept only as long as its readers need it.
        config["result_expires"] = contracts.ANSWER_RESULT_TTL_S
        return config
    visibility = max(contracts.VISIBILITY_TIMEOUT_S, refresh.refresh_time_limit_s(settings) + 1800)
    return client.celery_config(settings.redis.effective_url, visibility_timeout_s=visibility)


class CheckedTask(Task):
    """Every lorebot task: its arguments are checked before it runs (lorebot.payloads).

    Anyone who can write Redis can queue a task; the shared bounds (size, reply target,
    collection and version names) hold for every task, whatever its module checks besides.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        payloads.check_task_arguments(self.name, args, kwargs)
        return super().__call__(*args, **kwargs)


def create_app(
    settings: Settings, *, warm: bool = True, queues: Sequence[str] | None = None
) -> Celery:
    """A Celery app bound to these settings, with every lorebot task registered.

    `warm` loads the model and index in each worker process before its first task.
    `queues` are the queues this worker consumes (None: a producer, or any queue).
    """
    app = Celery("lorebot", task_cls=CheckedTask)
    app.conf.update(broker_config(settings, queues))
    app.conf.task_time_limit = settings.worker.task_timeout_s
    app.conf.task_soft_time_limit = max(1, settings.worker.task_timeout_s - 5)
    for family in TASK_FAMILIES:
        family.register(app, settings)

    def _load_once(**_: Any) -> None:
        # Load the model and index in each child before the first task, so the first
        # question does not pay for it. A missing index is not fatal: tasks report it.
        runtime = get_runtime(settings)
        # Keeps this process's contracts.SERVING entry alive while it idles.
        answer.start_heartbeat(settings, runtime)
        runtime.sync(force=True)  # a fresh machine fetches the published versions first
        try:
            # The generator object alone is lazy: load the weights too, or the first
            # question pays for it (~0.4 s on two cores).
            load_now(runtime.generator)
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
        answer.withdraw(settings, get_runtime(settings))  # this child serves nothing now

    def _metrics_stop(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            telemetry.stop_worker_server()

    worker_init.connect(_metrics_start, weak=False)
    worker_process_shutdown.connect(_metrics_child_gone, weak=False)
    worker_shutdown.connect(_metrics_stop, weak=False)
    return app
