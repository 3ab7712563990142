"""Shared bot state in Redis: exactly-once, rate limits, channel access and thread memory.

Everything that must agree across several bot processes lives here, keyed by
:mod:`bot.keys`. Each class takes a ``redis.Redis`` client (tests pass one connected
to a real redis-server) and does one job.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from lorebot import access, contracts
from lorebot.settings import Settings

log = logging.getLogger(__name__)


class Deduper:
    """First-writer-wins markers (``SET NX`` with a TTL) for events and messages.

    Slack redelivers an event when it did not see a 200 within 3 s (``X-Slack-Retry-Num``)
    and may send one message as both ``app_mention`` and ``message``; whichever copy
    claims the marker first is handled, the others are dropped.
    """

    def __init__(self, redis, ttl_s: int = contracts.DEDUPE_TTL_S) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    def claim(self, key: str, ttl_s: int | None = None) -> bool:
        """True for the first caller with this key within the TTL (``ttl_s``, else the default)."""
        return bool(self.redis.set(key, "1", nx=True, ex=ttl_s or self.ttl_s))

    def claim_event(self, event_id: str) -> bool:
        return self.claim(contracts.event_seen(event_id))

    def claim_signed(self, signature: str) -> bool:
        """Claim a signed HTTP request by its signature (HMAC of its timestamp and body).

        Slack accepts a signature for five minutes, so a captured slash command or
        button click could be sent again inside that window; commands and clicks carry
        no event id, and the signature is what makes each request unique.
        """
        return self.claim(contracts.signed_seen(signature), contracts.SIGNED_SEEN_TTL_S)

    def claim_message(self, channel: str, ts: str, client_msg_id: str | None = None) -> bool:
        """Claim a message by channel+ts, and by client_msg_id when Slack gave one."""
        first = self.claim(contracts.message_seen(channel, ts))
        if client_msg_id:
            first = self.claim(contracts.client_msg_seen(client_msg_id)) and first
        return first


# Sliding one-minute windows for the user and the workspace, checked and counted in
# one atomic step so that concurrent bot processes cannot both slip under the limit.
_RATE_SCRIPT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4])}
for i = 1, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= limits[i] then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    return {i, tostring(tonumber(oldest[2]) + window - now)}
  end
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[i], window)
end
return {0, '0'}
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    scope: str = ""  # "user" or "team" when refused
    limit: int = 0
    retry_after_s: float = 0.0


class RateLimiter:
    """Per-user and per-workspace questions per minute, shared through Redis."""

    WINDOW_MS = 60_000

    def __init__(self, redis, *, user_per_min: int, team_per_min: int) -> None:
        self.redis = redis
        self.user_per_min = user_per_min
        self.team_per_min = team_per_min
        self._script = redis.register_script(_RATE_SCRIPT)

    @classmethod
    def from_settings(cls, redis, settings: Settings) -> RateLimiter:
        return cls(
            redis,
            user_per_min=settings.slack.user_rate_per_min,
            team_per_min=settings.slack.team_rate_per_min,
        )

    def check(self, team: str | None, user: str) -> RateDecision:
        """Count one question if both windows have room; otherwise say when to retry."""
        now_ms = int(time.time() * 1000)
        which, wait_ms = self._script(
            keys=[
                contracts.rate("user", f"{team or '-'}:{user}"),
                contracts.rate("team", team or "-"),
            ],
            args=[
                now_ms,
                self.WINDOW_MS,
                self.user_per_min,
                self.team_per_min,
                f"{now_ms}:{uuid.uuid4().hex[:8]}",
            ],
        )
        which = int(which)
        if which == 0:
            return RateDecision(True)
        scope, limit = ("user", self.user_per_min) if which == 1 else ("team", self.team_per_min)
        return RateDecision(False, scope, limit, max(0.0, float(wait_ms) / 1000.0))


# The mapping itself lives in the shared kernel (lorebot.access), which the answer worker
# consults again before it searches: these names stay importable from here.
ALL = access.ALL
EVERYTHING = access.EVERYTHING


def open_access_warnings(settings: Settings) -> list[str]:
    """Settings that let questions search every collection, one line each (for start-up)."""
    return access.open_access_warnings(settings.slack)


class ChannelAccess:
    """Which collections a question from a channel may search. Closed by default.

    Resolution (:func:`lorebot.access.resolve`, shared with the answer worker): a DM uses
    ``dm_collections``, else ``default_collections``; a channel uses its Redis override
    (``/lorebot channel set``), else ``channel_collections`` from settings, else
    ``default_collections``. When nothing applies the answer is ``[]``: the channel is
    not mapped and the bot asks an admin to map it instead of searching. ``None`` means
    every collection, and only an explicit ``all`` / ``*`` (in settings or
    ``/lorebot channel set #c all``) gives it.
    """

    NOT_MAPPED = access.NOT_MAPPED

    def __init__(self, redis, settings: Settings) -> None:
        self.redis = redis
        self.slack = settings.slack

    def resolve(self, channel: str, *, is_dm: bool) -> tuple[list[str] | None, str]:
        """(collections, where the answer came from) for a channel."""
        return access.resolve(self.redis, self.slack, channel, is_dm=is_dm)

    def collections(self, channel: str, *, is_dm: bool) -> list[str] | None:
        return self.resolve(channel, is_dm=is_dm)[0]

    def set(self, channel: str, collections: list[str] | None) -> None:
        access.store_override(self.redis, channel, collections)

    def reset(self, channel: str) -> None:
        access.clear_override(self.redis, channel)


class Threads:
    """Threads the bot answered in: a later reply there is a follow-up."""

    def __init__(self, redis) -> None:
        self.redis = redis

    def remember(self, channel: str, thread_ts: str) -> None:
        self.redis.set(contracts.thread(channel, thread_ts), "1", ex=contracts.THREAD_TTL_S)

    def answered(self, channel: str, thread_ts: str) -> bool:
        return bool(self.redis.exists(contracts.thread(channel, thread_ts)))


def document_count(redis) -> int | None:
    """Documents in the current index as the workers last published it; None if unknown."""
    try:
        raw = redis.get(contracts.INDEX_DOCUMENTS)
        return int(raw) if raw is not None else None
    except (ValueError, TypeError):
        return None
