"""Celery beat's schedule, built from settings (cron in local time)."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from lorebot import contracts
from lorebot.errors import ConfigError
from lorebot.settings import Settings


def parse_cron(expr: str) -> crontab:
    """A 5-field cron expression as a Celery crontab; ConfigError when malformed."""
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(
            f"training.schedule {expr!r} is not a 5-field cron expression",
            fix='e.g. LOREBOT_TRAINING__SCHEDULE="0 2 * * *"',
        )
    minute, hour, dom, month, dow = fields
    try:
        return crontab(
            minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow
        )
    except ValueError as exc:
        raise ConfigError(
            f"training.schedule {expr!r}: {exc}", fix='e.g. LOREBOT_TRAINING__SCHEDULE="0 2 * * *"'
        ) from None


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """The nightly jobs at settings.training.schedule: re-index the recorded sources
    (incremental, so unchanged files cost nothing), then the model refresh learns from them."""
    return {
        "nightly-reindex": {
            "task": contracts.TASK_REINDEX,
            "schedule": parse_cron(settings.training.schedule),
            "kwargs": {"collection": None, "reply": None},
            "options": {"queue": contracts.QUEUE_INGEST},
        },
        # Same minute; the refresh task waits for the reindex lock to clear first.
        "nightly-refresh": {
            "task": contracts.TASK_REFRESH,
            "schedule": parse_cron(settings.training.schedule),
            "kwargs": {"reply": None, "scheduled": True},
            "options": {"queue": contracts.QUEUE_TRAIN},
        },
    }
