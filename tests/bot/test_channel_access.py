"""Closed by default: an unmapped channel or DM searches nothing and says who can fix it.

The ``bot`` fixture configures ``default_collections`` and ``dm_collections``; these tests
build a bot with only ``channel_collections`` (the configuration that used to open every
collection to every other channel and to DMs).
"""

from __future__ import annotations

import logging

import pytest

from bot import messages
from tests.bot.conftest import (
    ADMIN,
    CHANNEL,
    DM,
    HR_CHANNEL,
    USER,
    BotHarness,
    ephemerals,
    mention,
    message,
    placeholders,
    queued,
    slack_settings_for,
)


@pytest.fixture()
def closed_bot(tmp_path, redis_server, redis_client, fake_slack):
    """The bot with only HR_CHANNEL mapped: no default_collections, no dm_collections."""
    from bot.app import build_app
    from bot.server import BotServer

    settings = slack_settings_for(
        tmp_path,
        redis_server.url,
        fake_slack.api_url,
        default_collections=None,
        dm_collections=None,
    )
    app = build_app(settings, redis=redis_client)
    server = BotServer(app, redis_client, host="127.0.0.1", port=0).start()
    yield BotHarness(app, server, fake_slack, redis_client, settings)
    server.stop()


def test_unmapped_channel_gets_the_not_mapped_reply_and_no_task(closed_bot):
    bot = closed_bot
    assert bot.event(mention("What is the CEO's salary?", channel=CHANNEL)).status == 200
    (note,) = bot.fake.wait_for(lambda f: ephemerals(f, USER), what="not-mapped reply")
    bot.settle()
    assert note.args["channel"] == CHANNEL
    assert note.args["text"] == messages.channel_not_mapped(CHANNEL)
    assert "/lorebot channel set" in note.args["text"]
    assert queued(bot.redis) == [] and placeholders(bot.fake) == []


def test_direct_message_without_dm_or_default_collections_gets_the_reply_and_no_task(closed_bot):
    bot = closed_bot
    bot.event(message("Show me the payroll file", channel=DM, channel_type="im"))
    bot.fake.wait_for(
        lambda f: [c for c in f.calls_to("chat.postMessage") if c.args["channel"] == DM],
        what="not-mapped reply in the DM",
    )
    bot.settle()
    (note,) = bot.fake.calls_to("chat.postMessage")
    assert note.args["text"] == messages.DM_NOT_MAPPED
    assert queued(bot.redis) == [] and placeholders(bot.fake) == []


def test_ask_in_an_unmapped_channel_is_refused_before_anything_is_posted(closed_bot):
    bot = closed_bot
    resp = bot.command("/ask", "what is in the HR folder?", channel=CHANNEL)
    assert resp.status == 200 and "/lorebot channel set" in resp.body
    bot.settle()
    assert queued(bot.redis) == [] and bot.fake.calls_to("chat.postMessage") == []


def test_mapped_channel_still_searches_its_collections(closed_bot):
    closed_bot.event(mention("What is the parental leave policy?", channel=HR_CHANNEL))
    (task,) = closed_bot.wait_queued(1)
    assert task["kwargs"]["question"]["collections"] == ["hr"]


def test_an_admin_can_still_open_a_channel_to_everything(closed_bot):
    bot = closed_bot
    resp = bot.command("/lorebot", "channel show", user=ADMIN, channel=CHANNEL)
    assert "no collections" in resp.body and "not mapped" in resp.body
    bot.command("/lorebot", "channel set all", user=ADMIN, channel=CHANNEL)
    bot.event(mention("anything at all?", channel=CHANNEL))
    (task,) = bot.wait_queued(1)
    assert task["kwargs"]["question"]["collections"] is None


def test_dms_fall_back_to_default_collections(tmp_path, redis_server, redis_client, fake_slack):
    from bot.state import ChannelAccess

    settings = slack_settings_for(
        tmp_path, redis_server.url, fake_slack.api_url, dm_collections=None
    )
    access = ChannelAccess(redis_client, settings)
    assert access.collections(DM, is_dm=True) == ["general"]
    assert access.collections("CNEWCHAN1", is_dm=False) == ["general"]


@pytest.mark.parametrize("everything", ["*", "all", "ALL"])
def test_explicit_all_in_settings_opens_and_warns_at_start_up(
    tmp_path, redis_server, redis_client, fake_slack, caplog, everything
):
    from bot.app import build_app
    from bot.state import ChannelAccess

    caplog.set_level(logging.INFO)
    settings = slack_settings_for(
        tmp_path,
        redis_server.url,
        fake_slack.api_url,
        default_collections=[everything],
        channel_collections={HR_CHANNEL: ["hr"], "CENG00001": [everything]},
    )
    build_app(settings, redis=redis_client)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "every collection" in r.getMessage()
    ]
    assert any("default_collections" in w for w in warnings), warnings
    assert any("CENG00001" in w for w in warnings), warnings
    access = ChannelAccess(redis_client, settings)
    assert access.collections("CNEWCHAN1", is_dm=False) is None
    assert access.collections("CENG00001", is_dm=False) is None


def test_closed_configuration_logs_no_open_warning(
    tmp_path, redis_server, redis_client, fake_slack, caplog
):
    from bot.app import build_app

    caplog.set_level(logging.INFO)
    settings = slack_settings_for(
        tmp_path, redis_server.url, fake_slack.api_url, default_collections=None
    )
    build_app(settings, redis=redis_client)
    assert not [r for r in caplog.records if "every collection" in r.getMessage()]
