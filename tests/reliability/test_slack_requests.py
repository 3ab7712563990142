"""Promise 2: forged, replayed or unsigned requests get 401, queue nothing, and leave a
log line saying why; Slack's retries and duplicate deliveries give one question.

Forged signatures, a 10-minute-old timestamp, no headers at all, a tampered body and
Slack's retry headers are already in tests/bot/test_http_transport.py; these add the
replay of a captured request, the 5-minute boundary, each header missing alone, and the
log line, over the same real HTTP server, Redis and fake Slack.
"""

from __future__ import annotations

import logging
import time

import pytest

from tests.bot.conftest import (  # noqa: F401
    ADMIN,
    CHANNEL,
    SECRET,
    USER,
    bot,
    ephemerals,
    fake_slack,
    mention,
    placeholders,
    queued,
    slack_settings,
)
from tests.support.fake_slack import action_body, command_body, event_body, post, sign

pytestmark = pytest.mark.reliability


def rejected(bot, caplog, resp, reason: str) -> None:  # noqa: F811
    assert resp.status == 401
    bot.settle()
    assert queued(bot.redis) == [], "a refused request queued a question"
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "bot.server" and r.levelno >= logging.WARNING
    ]
    assert any("rejected Slack request" in m and reason in m for m in lines), lines


def test_replayed_request_after_five_minutes_is_refused(bot, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    body = event_body(mention("What is the wifi password?"), event_id="EvREPLAY1")
    captured = sign(SECRET, body, int(time.time()) - 301)  # signed correctly, 5 min 1 s ago
    resp = post(bot.url + "/slack/events", body, captured, "application/json")
    rejected(bot, caplog, resp, "replay window")


def test_replay_inside_the_window_is_deduplicated(bot):  # noqa: F811
    body = event_body(mention("Where is the first-aid kit?"), event_id="EvREPLAY2")
    headers = sign(SECRET, body, int(time.time()) - 240)
    first = post(bot.url + "/slack/events", body, headers, "application/json")
    again = post(bot.url + "/slack/events", body, headers, "application/json")
    assert (first.status, again.status) == (200, 200)
    bot.settle()
    assert len(queued(bot.redis)) == 1


@pytest.mark.parametrize("drop", ["X-Slack-Signature", "X-Slack-Request-Timestamp"])
def test_request_missing_one_header_is_refused(bot, caplog, drop):  # noqa: F811
    caplog.set_level(logging.INFO)
    body = event_body(mention("Who is on call?"), event_id="EvMISS" + drop[-4:])
    headers = {k: v for k, v in sign(SECRET, body).items() if k != drop}
    resp = post(bot.url + "/slack/events", body, headers, "application/json")
    rejected(bot, caplog, resp, "missing header " + drop.lower())


@pytest.mark.parametrize(
    "path,ctype",
    [
        ("/slack/commands", "application/x-www-form-urlencoded"),
        ("/slack/actions", "application/x-www-form-urlencoded"),
    ],
)
def test_forged_command_and_action_are_refused(bot, caplog, path, ctype):  # noqa: F811
    caplog.set_level(logging.INFO)
    body = "command=%2Fask&text=leak+the+HR+file&user_id=UX&channel_id=CX&team_id=T0000TEAM"
    resp = post(bot.url + path, body, sign("a-guessed-secret", body), ctype)
    rejected(bot, caplog, resp, "signature does not match")


def test_forged_event_is_logged(bot, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    resp = bot.event(mention("What is the wifi password?"), secret="not-the-secret")
    rejected(bot, caplog, resp, "signature does not match")


def test_slack_retries_and_duplicate_deliveries_make_one_question_each(bot):  # noqa: F811
    """Five questions, each delivered three times (two retries) and once more under a
    second event id (app_mention + message.im): five questions queued, one per message."""
    for i in range(5):
        ev = mention(f"Question number {i} about the parking garage?", channel="DUSERDM01")
        for retry in range(3):
            extra = (
                {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
                if retry
                else None
            )
            assert bot.event(ev, event_id=f"EvDUP{i}", extra=extra).status == 200
        assert (
            bot.event(dict(ev, type="message", channel_type="im"), event_id=f"EvDUPim{i}").status
            == 200
        )
    bot.settle()
    texts = sorted(t["kwargs"]["question"]["text"] for t in queued(bot.redis))
    assert texts == sorted(f"Question number {i} about the parking garage?" for i in range(5))


def _replay_twice(bot, path: str, body: str) -> tuple[int, int]:  # noqa: F811
    """Send one signed request twice, as an attacker who captured it would (4 min later)."""
    headers = sign(SECRET, body, int(time.time()) - 240)
    ctype = "application/x-www-form-urlencoded"
    first = post(bot.url + path, body, headers, ctype)
    again = post(bot.url + path, body, headers, ctype)
    bot.settle()
    return first.status, again.status


def test_replayed_slash_command_inside_the_window_runs_once(bot):  # noqa: F811
    body = command_body(
        "/ask",
        "who signs off overtime?",
        user=USER,
        channel=CHANNEL,
        response_url=bot.fake.response_url("rp"),
    )
    assert _replay_twice(bot, "/slack/commands", body) == (200, 200)
    assert len(queued(bot.redis)) == 1, "a replayed /ask queued a second question"
    assert len(placeholders(bot.fake)) == 1


def test_replayed_admin_command_starts_one_job(bot):  # noqa: F811
    body = command_body(
        "/lorebot", "reindex", user=ADMIN, channel=CHANNEL, response_url=bot.fake.response_url("rj")
    )
    assert _replay_twice(bot, "/slack/commands", body) == (200, 200)
    assert len(queued(bot.redis, "ingest")) == 1, "a replayed /lorebot reindex ran twice"


def test_replayed_button_click_has_one_effect(bot):  # noqa: F811
    message = {"type": "message", "ts": "1700000001.000100", "text": "27 days", "user": "UB"}
    body = action_body(
        "feedback_up",
        "qreplay",
        user=USER,
        channel=CHANNEL,
        message=message,
        response_url=bot.fake.response_url("ra"),
    )
    assert _replay_twice(bot, "/slack/actions", body) == (200, 200)
    assert len(ephemerals(bot.fake)) == 1, "a replayed click was handled twice"
