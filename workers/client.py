"""The Celery configuration every lorebot process shares, and the thin submit-only client.

The bot and the CLI ``send_task`` by the names in :mod:`lorebot.contracts` through
:func:`make_client`, without importing any model, index or parsing code (the bot must not).
"""

from __future__ import annotations

from typing import Any

from lorebot.contracts import QUEUE_ANSWER, TASK_QUEUES, VISIBILITY_TIMEOUT_S


def celery_config(
    redis_url: str,
    visibility_timeout_s: int = VISIBILITY_TIMEOUT_S,
    *,
    unacked_namespace: str | None = None,
) -> dict[str, Any]:
    """Celery configuration shared by producers and workers.

    Late acks + reject-on-worker-lost: a worker killed mid-task leaves the message in
    Redis to be redelivered, so no question is lost. The visibility timeout is longer
    than any task (training included) so a long task is not delivered twice.

    ``unacked_namespace`` gives a worker its own set of unacknowledged messages in Redis.
    Answer-only workers use it with a short visibility timeout: a question held by a
    worker that died whole comes back in minutes, while the long timeout that protects a
    night's training from being run twice stays on the ingest/train workers' own set
    (each worker only restores messages from its own set).
    """
    transport: dict[str, Any] = {"visibility_timeout": visibility_timeout_s}
    if unacked_namespace:
        transport.update(
            unacked_key=f"unacked:{unacked_namespace}",
            unacked_index_key=f"unacked_index:{unacked_namespace}",
            unacked_mutex_key=f"unacked_mutex:{unacked_namespace}",
            # look for expired messages every 10 s rather than every 100 s
            unacked_restore_interval=10,
            unacked_restore_throttle=1,
        )
    return {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "result_expires": 24 * 3600,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_default_queue": QUEUE_ANSWER,
        "worker_hijack_root_logger": False,
        "broker_connection_timeout": 4,
        "redis_socket_connect_timeout": 4,
    }


def make_client(redis_url: str):
    """A Celery app that can only submit tasks by name (no task code imported)."""
    from celery import Celery

    app = Celery("lorebot-client")
    app.conf.update(celery_config(redis_url))
    return app
