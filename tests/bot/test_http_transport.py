"""The HTTP Events API: signatures, exactly-once, health endpoints, the placeholder."""

from __future__ import annotations

import json
import time

from lorebot import contracts
from tests.bot.conftest import CHANNEL, SECRET, USER, mention, placeholders, queued
from tests.support.fake_slack import BOT_USER_ID, event_body, get, post


def test_signed_mention_is_acked_answered_in_thread_and_queued(bot):
    ev = mention("How many days of annual leave do I get?")
    resp = bot.event(ev)
    assert resp.status == 200

    (call,) = bot.fake.wait_for(lambda f: placeholders(f), what="placeholder")
    assert call.args["channel"] == CHANNEL
    assert call.args["thread_ts"] == ev["ts"]
    assert call.token == "xoxb-test-token"

    (task,) = bot.wait_queued(1)
    assert task["task"] == "lorebot.answer"
    question, reply = task["kwargs"]["question"], task["kwargs"]["reply"]
    assert task["id"] == question["question_id"]
    assert question["text"] == "How many days of annual leave do I get?"
    assert question["user"] == USER and question["channel"] == CHANNEL
    assert question["collections"] == ["general"]  # default_collections for unmapped channels
    assert reply["channel"] == CHANNEL and reply["thread_ts"] == ev["ts"] and reply["user"] == USER
    posted_ts = [ts for (ch, ts), m in bot.fake.messages.items() if m.text.startswith("Searching")]
    assert reply["message_ts"] == posted_ts[0]
    assert reply["team"] and isinstance(reply["started_at"], float)
    # The watchdog knows about it until a worker delivers.
    assert bot.redis.hexists(contracts.PENDING, question["question_id"])


def test_placeholder_shows_document_count_and_queue_position(bot):
    bot.redis.set(contracts.INDEX_DOCUMENTS, 1234)
    bot.redis.lpush("answer", "{}", "{}")  # two questions already waiting: workers are busy
    bot.event(mention("Where do I book a meeting room?"))
    (call,) = bot.fake.wait_for(lambda f: placeholders(f), what="placeholder")
    assert call.args["text"].startswith("Searching 1,234 documents…")
    assert "number 3 in the queue" in call.args["text"]


def test_forged_signature_is_rejected_and_nothing_is_queued(bot):
    resp = bot.event(mention("What is the wifi password?"), secret="not-the-secret")
    assert resp.status == 401
    assert queued(bot.redis) == []
    assert [c.method for c in bot.fake.calls] == ["auth.test"]  # only bolt's start-up check


def test_expired_signature_is_rejected(bot):
    resp = bot.event(mention("What is the wifi password?"), timestamp=int(time.time()) - 600)
    assert resp.status == 401
    assert queued(bot.redis) == []


def test_missing_signature_is_rejected(bot):
    body = event_body(mention("What is the wifi password?"), event_id="Ev1")
    resp = post(bot.url + "/slack/events", body, {}, "application/json")
    assert resp.status == 401
    assert queued(bot.redis) == []


def test_tampered_body_is_rejected(bot):
    body = event_body(mention("harmless"), event_id="Ev2")
    from tests.support.fake_slack import sign

    headers = sign(SECRET, body)
    resp = post(
        bot.url + "/slack/events", body.replace("harmless", "evil"), headers, "application/json"
    )
    assert resp.status == 401
    assert queued(bot.redis) == []


def test_url_verification_challenge(bot):
    body = json.dumps({"token": "t", "challenge": "abc123", "type": "url_verification"})
    resp = bot.post_signed("/slack/events", body, "application/json")
    assert resp.status == 200
    assert "abc123" in resp.body


def test_slack_retry_of_the_same_event_gives_one_answer(bot):
    ev = mention("How do I claim expenses?")
    first = bot.event(ev, event_id="EvRETRY1")
    # Slack did not see our 200 in time and retries, twice, with X-Slack-Retry-Num.
    second = bot.event(
        ev,
        event_id="EvRETRY1",
        extra={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    third = bot.event(
        ev,
        event_id="EvRETRY1",
        extra={"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert (first.status, second.status, third.status) == (200, 200, 200)
    bot.settle()
    assert len(queued(bot.redis)) == 1
    assert len(placeholders(bot.fake)) == 1


def test_same_message_as_mention_and_dm_event_is_answered_once(bot):
    """One message delivered under two event ids (e.g. app_mention + message.im) is one question."""
    ev = mention("Who approves my leave?", channel="DUSERDM01")
    dm = dict(ev, type="message", channel_type="im")
    bot.event(ev, event_id="EvA")
    bot.event(dm, event_id="EvB")
    bot.settle()
    assert len(queued(bot.redis)) == 1


def test_health_and_readiness(bot):
    assert get(bot.url + "/healthz").status == 200
    ready = get(bot.url + "/readyz")
    assert ready.status == 200 and ready.json()["redis"] is True
    assert get(bot.url + "/nope").status == 404


def test_readiness_fails_when_redis_is_gone(slack_settings, fake_slack, redis_client):
    import redis as redis_lib
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from bot.app import build_app
    from bot.server import BotServer

    dead = redis_lib.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    app = build_app(slack_settings, redis=redis_client)
    server = BotServer(app, dead, host="127.0.0.1", port=0).start()
    try:
        resp = get(server.url + "/readyz")
        assert resp.status == 503 and resp.json()["redis"] is False
    finally:
        server.stop()


def test_socket_mode_only_bot_serves_no_http_events(slack_settings, fake_slack, redis_client):
    from bot.app import build_app
    from bot.server import BotServer

    app = build_app(slack_settings, redis=redis_client)
    server = BotServer(app, redis_client, host="127.0.0.1", port=0, http_enabled=False).start()
    try:
        body = event_body(mention("hi"), event_id="Ev9")
        from tests.support.fake_slack import sign

        resp = post(server.url + "/slack/events", body, sign(SECRET, body), "application/json")
        assert resp.status == 404
        assert queued(redis_client) == []
    finally:
        server.stop()


def test_bot_user_mention_is_stripped_from_question(bot):
    bot.event(mention(f"<@{BOT_USER_ID}> what is   the <#C123|general> policy?"))
    (task,) = bot.wait_queued(1)
    assert task["kwargs"]["question"]["text"] == "what is the #general policy?"
