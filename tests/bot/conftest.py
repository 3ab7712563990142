"""Fixtures for the Slack edge: a fake Slack Web API, the bolt app served over HTTP on a
real redis-server, and helpers to send requests signed exactly as Slack signs them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.fake_slack import (
    BOT_USER_ID,
    TEAM_ID,
    FakeSlack,
    HttpResult,
    action_body,
    command_body,
    event_body,
    post,
    sign,
    view_submission_body,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ADMIN = "UADMIN001"
USER = "UUSER0001"
CHANNEL = "CGENERAL1"
HR_CHANNEL = "CHRPRIV01"
DM = "DUSERDM01"


@pytest.fixture()
def fake_slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def slack_settings_for(tmp_path, redis_url: str, api_url: str, **slack: Any):
    from tests.conftest import make_settings

    values = {
        "bot_token": "xoxb-test-token",
        "signing_secret": SECRET,
        "api_url": api_url,
        "admin_user_ids": [ADMIN],
        "channel_collections": {HR_CHANNEL: ["hr"]},
        "default_collections": ["general"],
        "dm_collections": ["handbook"],
        "user_rate_per_min": 5,
        "team_rate_per_min": 100,
        "max_question_chars": 2000,
        "history_turns": 4,
    }
    values.update(slack)
    return make_settings(tmp_path / "data", redis_url, slack=values)


@pytest.fixture()
def slack_settings(tmp_path, redis_server, fake_slack):
    return slack_settings_for(tmp_path, redis_server.url, fake_slack.api_url)


def queued(redis, queue: str = "answer") -> list[dict[str, Any]]:
    """Celery messages waiting in a Redis queue, decoded: task name, id and kwargs."""
    out = []
    for raw in redis.lrange(queue, 0, -1):
        msg = json.loads(raw)
        body = msg["body"]
        if msg.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        args, kwargs, _embed = json.loads(body)
        out.append(
            {
                "task": msg["headers"]["task"],
                "id": msg["headers"]["id"],
                "args": args,
                "kwargs": kwargs,
            }
        )
    out.reverse()  # kombu LPUSHes; oldest first
    return out


@dataclass
class BotHarness:
    """The bolt app behind a real HTTP server, with helpers that speak Slack's protocol."""

    app: Any
    server: Any
    fake: FakeSlack
    redis: Any
    settings: Any

    @property
    def url(self) -> str:
        return self.server.url

    def post_signed(
        self,
        path: str,
        body: str,
        content_type: str,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        extra: dict[str, str] | None = None,
    ) -> HttpResult:
        headers = sign(secret, body, timestamp)
        headers.update(extra or {})
        return post(self.url + path, body, headers, content_type)

    def event(self, event: dict[str, Any], *, event_id: str | None = None, **kw) -> HttpResult:
        body = event_body(event, event_id=event_id or "Ev" + uuid.uuid4().hex[:10].upper())
        return self.post_signed("/slack/events", body, "application/json", **kw)

    def command(
        self,
        command: str,
        text: str,
        *,
        user: str = USER,
        channel: str = CHANNEL,
        response_id: str = "r1",
        **kw,
    ) -> HttpResult:
        body = command_body(
            command,
            text,
            user=user,
            channel=channel,
            response_url=self.fake.response_url(response_id),
        )
        return self.post_signed("/slack/commands", body, "application/x-www-form-urlencoded", **kw)

    def action(
        self,
        action_id: str,
        value: str,
        *,
        message: dict[str, Any],
        user: str = USER,
        channel: str = CHANNEL,
        **kw,
    ) -> HttpResult:
        body = action_body(
            action_id,
            value,
            user=user,
            channel=channel,
            message=message,
            response_url=self.fake.response_url("act"),
            trigger_id=self.fake.new_trigger(),
        )
        return self.post_signed("/slack/actions", body, "application/x-www-form-urlencoded", **kw)

    def submit_view(
        self, view: dict[str, Any], values: dict[str, dict[str, str]], *, user: str = USER, **kw
    ) -> HttpResult:
        """Submit a modal the bot opened, as Slack posts it to the interactivity URL."""
        body = view_submission_body(view, values, user=user)
        return self.post_signed("/slack/actions", body, "application/x-www-form-urlencoded", **kw)

    def wait_queued(
        self, n: int = 1, queue: str = "answer", timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            tasks = queued(self.redis, queue)
            if len(tasks) >= n:
                return tasks
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} task(s) on {queue}, found {len(tasks)}")
            time.sleep(0.05)

    def settle(self) -> None:
        """Wait for every listener bolt has started (the executor takes no new work after)."""
        self.app.listener_runner.listener_executor.shutdown(wait=True)


def mention(
    text: str,
    *,
    channel: str = CHANNEL,
    user: str = USER,
    ts: str | None = None,
    thread_ts: str | None = None,
) -> dict[str, Any]:
    ev = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER_ID}> {text}".rstrip(),
        "ts": ts or f"{time.time():.6f}",
        "channel": channel,
        "team": TEAM_ID,
        "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts:
        ev["thread_ts"] = thread_ts
    return ev


def message(
    text: str,
    *,
    channel: str,
    channel_type: str,
    user: str = USER,
    ts: str | None = None,
    thread_ts: str | None = None,
    client_msg_id: str | None = None,
) -> dict[str, Any]:
    ev = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts or f"{time.time():.6f}",
        "channel": channel,
        "channel_type": channel_type,
        "team": TEAM_ID,
        "client_msg_id": client_msg_id or str(uuid.uuid4()),
    }
    if thread_ts:
        ev["thread_ts"] = thread_ts
    return ev


@pytest.fixture()
def bot(slack_settings, redis_client, fake_slack):
    from bot.app import build_app
    from bot.server import BotServer

    app = build_app(slack_settings, redis=redis_client)
    server = BotServer(app, redis_client, host="127.0.0.1", port=0).start()
    yield BotHarness(app, server, fake_slack, redis_client, slack_settings)
    server.stop()


def placeholders(fake: FakeSlack, channel: str | None = None):
    """chat.postMessage calls that posted a 'Searching…' placeholder."""
    return [
        c
        for c in fake.calls_to("chat.postMessage")
        if c.args.get("text", "").startswith("Searching")
        and (channel is None or c.args["channel"] == channel)
    ]


def ephemerals(fake: FakeSlack, user: str | None = None):
    return [
        c for c in fake.calls_to("chat.postEphemeral") if user is None or c.args.get("user") == user
    ]


__all__ = [
    "ADMIN",
    "BOT_USER_ID",
    "CHANNEL",
    "DM",
    "HR_CHANNEL",
    "SECRET",
    "TEAM_ID",
    "USER",
    "ephemerals",
    "mention",
    "message",
    "placeholders",
    "queued",
]


def reindex_in_thread(fake_slack: Any, settings: Any, channel: str, user: str, collection: str):
    """Run a ``/lorebot reindex`` in-process the way the slash command's task does: a
    headline posted to ``channel`` first, progress and the result threaded under it.
    Returns the headline message and the task's result."""
    from workers.tasks import ingest as ingest_tasks

    headline = fake_slack._api_chat_postMessage({"channel": channel, "text": "started"})
    reply = {
        "channel": channel,
        "thread_ts": headline["ts"],
        "message_ts": headline["ts"],
        "user": user,
        "started_at": time.time(),
    }
    return headline, ingest_tasks.reindex_impl(settings, collection=collection, reply=reply)
