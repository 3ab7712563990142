"""The one Slack Web API client factory: the bot, the workers and the jobs all build theirs here."""

from __future__ import annotations

from typing import Any

from lorebot.errors import ConfigError


def web_client(
    settings: Any,
    *,
    timeout: int = 10,
    require_token: bool = False,
    need: str | None = None,
    fix: str = "set LOREBOT_SLACK__BOT_TOKEN=xoxb-…",
) -> Any:
    """A ``slack_sdk.WebClient`` for the configured bot token and Web API base URL.

    ``settings`` is :class:`lorebot.settings.Settings`. With ``require_token`` (or a
    ``need``: what the token is needed for), a missing token is a :class:`ConfigError`;
    otherwise the client is built without one (its calls then fail with Slack's own error).
    """
    from slack_sdk import WebClient

    token = settings.slack.bot_token
    if token is None and (require_token or need):
        raise ConfigError(
            "the Slack bot token is not set" + (f", so {need}" if need else ""), fix=fix
        )
    return WebClient(
        token=token.get_secret_value() if token is not None else None,
        base_url=settings.slack.api_url,
        timeout=timeout,
    )
