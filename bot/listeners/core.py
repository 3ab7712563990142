"""What every listener shares: the bot's dependencies and its view of Slack errors.

:class:`BotCore` holds the settings, Redis, the worker gateway and ``enqueue``, the
feedback store, the watchdog and the Redis-backed state (dedupe, rate limits, channel
access, answered threads). One is built per app (``app.lorebot``) and handed to every
listener.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.gateway import Enqueue, WorkerGateway
from bot.state import ChannelAccess, Deduper, RateLimiter, Threads
from bot.watchdog import Watchdog
from lorebot.feedback import FeedbackStore
from lorebot.settings import Settings


def slack_error(exc: Exception) -> str | None:
    """The ``error`` code of a failed Web API call (``not_in_channel``…), else None."""
    data = getattr(getattr(exc, "response", None), "data", None)
    return data.get("error") if isinstance(data, dict) else None


class BotCore:
    """The transport-free dependencies of the Slack edge, shared by all listeners."""

    def __init__(
        self,
        settings: Settings,
        redis,
        *,
        gateway: WorkerGateway,
        enqueue: Enqueue,
        feedback: FeedbackStore,
        watchdog: Watchdog,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.gateway = gateway
        self.enqueue = enqueue
        self.feedback = feedback
        self.watchdog = watchdog
        self.dedupe = Deduper(redis)
        self.rates = RateLimiter.from_settings(redis, settings)
        self.access = ChannelAccess(redis, settings)
        self.threads = Threads(redis)

    def is_admin(self, user: str) -> bool:
        return user in self.settings.slack.admin_user_ids

    def queue_depth(self, queue: str) -> int:
        try:
            return int(self.redis.llen(queue))
        except Exception:
            return 0


def make_enqueue(gateway: WorkerGateway) -> Callable[[str, dict, str, str | None], Any]:
    """The default ``enqueue``: Celery ``send_task`` by name through the gateway."""

    def enqueue(name: str, kwargs: dict, queue: str, task_id: str | None = None) -> Any:
        return gateway.send(name, kwargs, queue, task_id)

    return enqueue
