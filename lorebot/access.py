"""Who may search what: the one function that maps a Slack channel to its collections.

The bot asks it before it queues a question (so an unmapped channel gets a reply
instead of a task), and the answer worker asks it again for the channel the answer will
be posted in, ignoring whatever collections the task payload carries: whoever can write
a task into Redis must not be able to choose what a channel reads. Both read the same
mapping (settings plus the run-time overrides of ``/lorebot channel set``, a Redis hash),
so they cannot disagree.

Closed by default: a channel that is not mapped, with no ``default_collections`` to fall
back on, searches nothing (``[]``); ``None`` (every collection) comes only from an
explicit ``*`` / ``all``.
"""

from __future__ import annotations

import json
from typing import Any

from lorebot import contracts

#: How a run-time override that opens every collection is stored in the Redis hash.
ALL = "*"
#: Names that mean "every collection" in settings and in ``/lorebot channel set``.
EVERYTHING = frozenset({"*", "all"})
#: Where the answer came from when nothing maps the channel.
NOT_MAPPED = "not mapped: an admin must run /lorebot channel set"


def names(values: list[str]) -> list[str] | None:
    """The collections a setting lists; ``None`` (every collection) for ``*`` or ``all``."""
    if any(v.strip().lower() in EVERYTHING for v in values):
        return None
    return list(values)


def is_direct_message(channel: str) -> bool:
    """Slack ids of direct-message conversations start with ``D``."""
    return channel.startswith("D")


def read_override(redis: Any, channel: str) -> tuple[bool, list[str] | None]:
    """(found, collections) of a ``/lorebot channel set`` override in Redis.

    A value that is not a JSON list of names or ``"*"`` is treated as no override.
    """
    raw = redis.hget(contracts.CHANNEL_COLLECTIONS, channel)
    if raw is None:
        return False, None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return False, None
    if value == ALL:
        return True, None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return True, list(value)
    return False, None


def resolve(
    redis: Any, slack: Any, channel: str, *, is_dm: bool | None = None
) -> tuple[list[str] | None, str]:
    """(collections, where that came from) for a question asked in ``channel``.

    ``slack`` is :class:`lorebot.settings.SlackSettings`. A DM uses ``dm_collections``,
    else ``default_collections``; a channel uses its Redis override, else
    ``channel_collections``, else ``default_collections``; otherwise ``[]``.
    ``is_dm`` defaults to what the channel id says.
    """
    if is_dm is None:
        is_dm = is_direct_message(channel)
    if is_dm:
        if slack.dm_collections is not None:
            return names(slack.dm_collections), "direct-message setting"
        return _default(slack)
    found, value = read_override(redis, channel)
    if found:
        return value, "set with /lorebot channel set"
    if channel in slack.channel_collections:
        return names(slack.channel_collections[channel]), "settings"
    return _default(slack)


def _default(slack: Any) -> tuple[list[str] | None, str]:
    if slack.default_collections is not None:
        return names(slack.default_collections), "default setting"
    return [], NOT_MAPPED


def read_overrides(redis: Any) -> dict[str, list[str] | None]:
    """Every ``/lorebot channel set`` override: channel -> collections (``None``: every one).

    Values that :func:`read_override` would ignore are left out here too.
    """
    out: dict[str, list[str] | None] = {}
    for raw_channel in redis.hkeys(contracts.CHANNEL_COLLECTIONS):
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        found, value = read_override(redis, channel)
        if found:
            out[channel] = value
    return out


#: Keys of :func:`mapping` that stand for every unmapped channel and for direct messages.
DEFAULT_KEY = "default"
DM_KEY = "dm"


def mapping(
    slack: Any, overrides: dict[str, list[str] | None] | None = None
) -> dict[str, list[str] | None]:
    """What each mapped audience may search, by the same rules as :func:`resolve`.

    Every channel of ``slack.channel_collections`` and of ``overrides`` (an override
    wins), plus :data:`DEFAULT_KEY` when ``default_collections`` is set and :data:`DM_KEY`
    when direct messages may search something. ``None`` means every collection. The
    nightly refresh plans its adapters' access scopes from this.
    """
    out: dict[str, list[str] | None] = {
        channel: names(values) for channel, values in slack.channel_collections.items()
    }
    out.update(overrides or {})
    if slack.default_collections is not None:
        out[DEFAULT_KEY] = names(slack.default_collections)
    if slack.dm_collections is not None:
        out[DM_KEY] = names(slack.dm_collections)
    elif slack.default_collections is not None:
        out[DM_KEY] = out[DEFAULT_KEY]
    return out


def store_override(redis: Any, channel: str, collections: list[str] | None) -> None:
    """Record a ``/lorebot channel set`` override (``None``: every collection)."""
    value = ALL if collections is None else sorted(set(collections))
    redis.hset(contracts.CHANNEL_COLLECTIONS, channel, json.dumps(value))


def clear_override(redis: Any, channel: str) -> None:
    redis.hdel(contracts.CHANNEL_COLLECTIONS, channel)


def open_access_warnings(slack: Any) -> list[str]:
    """Settings that let questions search every collection, one line each (for start-up)."""
    lines = []
    if slack.default_collections is not None and names(slack.default_collections) is None:
        lines.append(
            "slack.default_collections opens every collection to every unmapped channel"
            + ("" if slack.dm_collections is not None else " and to direct messages")
        )
    if slack.dm_collections is not None and names(slack.dm_collections) is None:
        lines.append("slack.dm_collections opens every collection to direct messages")
    wide = sorted(c for c, vals in slack.channel_collections.items() if names(vals) is None)
    if wide:
        lines.append("slack.channel_collections opens every collection to " + ", ".join(wide))
    return lines
