"""Slash commands: /ask for everyone, /lorebot for admins only."""

from __future__ import annotations

import json

import pytest

from bot import messages
from lorebot import contracts
from tests.bot.conftest import ADMIN, CHANNEL, HR_CHANNEL, USER, placeholders, queued


def test_ask_posts_the_question_then_answers_in_its_thread(bot):
    resp = bot.command("/ask", "how long does my password have to be?")
    assert resp.status == 200 and resp.body == ""
    (task,) = bot.wait_queued(1)
    echo = bot.fake.calls_to("chat.postMessage")[0]
    assert echo.args["channel"] == CHANNEL
    assert echo.args["text"] == f"<@{USER}> asked: how long does my password have to be?"
    (ph,) = placeholders(bot.fake)
    echo_ts = [ts for (ch, ts), m in bot.fake.messages.items() if m.text == echo.args["text"]][0]
    assert ph.args["thread_ts"] == echo_ts
    assert task["kwargs"]["reply"]["thread_ts"] == echo_ts
    assert task["kwargs"]["question"]["text"] == "how long does my password have to be?"


def test_ask_with_no_text_explains_usage(bot):
    resp = bot.command("/ask", "   ")
    assert resp.status == 200 and messages.EMPTY_QUESTION in resp.body
    bot.settle()
    assert queued(bot.redis) == []


def test_ask_in_a_channel_the_bot_is_not_in_replies_via_response_url(bot):
    bot.fake.fail("chat.postMessage", "not_in_channel")
    resp = bot.command("/ask", "where is the office?", response_id="notin")
    assert resp.status == 200
    (r,) = bot.fake.wait_for(lambda f: f.responses, what="response_url post")
    assert r["id"] == "notin" and r["text"] == messages.NOT_IN_CHANNEL
    bot.settle()
    assert queued(bot.redis) == []


def test_ask_escapes_the_echoed_question(bot):
    bot.command("/ask", "what about <!channel> & <b>tags</b>?")
    bot.wait_queued(1)
    echo = bot.fake.calls_to("chat.postMessage")[0]
    assert "<!channel>" not in echo.args["text"]
    assert "&lt;b&gt;tags&lt;/b&gt;" in echo.args["text"]


# ----------------------------------------------------------------------------- /lorebot
@pytest.mark.parametrize(
    "text", ["status", "reindex", "channel set all", "adapters promote v1", ""]
)
def test_admin_commands_are_refused_for_non_admins(bot, text):
    before = bot.redis.hgetall(contracts.CHANNEL_COLLECTIONS)
    resp = bot.command("/lorebot", text, user=USER)
    assert resp.status == 200
    assert messages.ADMIN_ONLY in resp.body
    bot.settle()
    assert bot.redis.hgetall(contracts.CHANNEL_COLLECTIONS) == before
    for q in contracts.ALL_QUEUES:
        assert queued(bot.redis, q) == []


def test_admin_help(bot):
    resp = bot.command("/lorebot", "help", user=ADMIN)
    assert "reindex [collection]" in resp.body


def test_channel_set_show_and_reset(bot):
    show = bot.command("/lorebot", "channel show", user=ADMIN, channel=HR_CHANNEL)
    assert "`hr`" in show.body and "settings" in show.body

    resp = bot.command("/lorebot", "channel set hr, payroll", user=ADMIN, channel=HR_CHANNEL)
    assert "`hr`, `payroll`" in resp.body
    assert json.loads(bot.redis.hget(contracts.CHANNEL_COLLECTIONS, HR_CHANNEL)) == [
        "hr",
        "payroll",
    ]

    other = bot.command(
        "/lorebot", f"channel set <#{CHANNEL}|general> all", user=ADMIN, channel=HR_CHANNEL
    )
    assert "all collections" in other.body
    assert json.loads(bot.redis.hget(contracts.CHANNEL_COLLECTIONS, CHANNEL)) == "*"

    bot.command("/lorebot", "channel reset", user=ADMIN, channel=HR_CHANNEL)
    assert bot.redis.hget(contracts.CHANNEL_COLLECTIONS, HR_CHANNEL) is None


def test_channel_set_all_lets_questions_search_every_collection(bot):
    bot.command("/lorebot", "channel set all", user=ADMIN, channel=HR_CHANNEL)
    from tests.bot.conftest import mention

    bot.event(mention("anything", channel=HR_CHANNEL))
    (task,) = bot.wait_queued(1)
    assert task["kwargs"]["question"]["collections"] is None


def test_reindex_goes_to_the_ingest_queue_with_a_progress_thread(bot):
    resp = bot.command("/lorebot", "reindex handbook", user=ADMIN)
    assert resp.status == 200
    (task,) = bot.wait_queued(1, queue=contracts.QUEUE_INGEST)
    assert task["task"] == contracts.TASK_REINDEX
    assert task["kwargs"]["collection"] == "handbook"
    headline = bot.fake.calls_to("chat.postMessage")[0]
    assert "reindex of collection `handbook`" in headline.args["text"]
    reply = task["kwargs"]["reply"]
    assert reply["channel"] == CHANNEL and reply["thread_ts"] == reply["message_ts"]
    assert queued(bot.redis, contracts.QUEUE_ANSWER) == []


def test_reindex_all_collections(bot):
    bot.command("/lorebot", "reindex", user=ADMIN)
    (task,) = bot.wait_queued(1, queue=contracts.QUEUE_INGEST)
    assert task["kwargs"]["collection"] is None


def test_refresh_goes_to_the_train_queue(bot):
    bot.command("/lorebot", "refresh", user=ADMIN)
    (task,) = bot.wait_queued(1, queue=contracts.QUEUE_TRAIN)
    assert task["task"] == contracts.TASK_REFRESH


def test_unknown_admin_command_lists_the_commands(bot):
    resp = bot.command("/lorebot", "frobnicate <now>", user=ADMIN)
    assert "I don't know `frobnicate &lt;now&gt;`" in resp.body
    assert "reindex" in resp.body


def test_status_without_workers_still_reports(bot):
    """No worker: the report says so (after a bounded wait) instead of hanging."""
    bot.redis.lpush(contracts.QUEUE_ANSWER, "{}")
    resp = bot.command("/lorebot", "status", user=ADMIN, response_id="status")
    assert resp.status == 200
    (r,) = bot.fake.wait_for(lambda f: f.responses, timeout=30, what="status report")
    assert "live workers: *none*" in r["text"]
    assert "no worker answered lorebot.status" in r["text"]
    assert "answer 2" in r["text"]  # the waiting item + the status task itself
