"""Mentions, DMs and thread follow-ups: access control, rate limits, bad input."""

from __future__ import annotations

from bot import messages
from lorebot import contracts
from tests.bot.conftest import (
    CHANNEL,
    DM,
    HR_CHANNEL,
    USER,
    ephemerals,
    mention,
    message,
    placeholders,
    queued,
)
from tests.support.fake_slack import BOT_USER_ID


# ----------------------------------------------------------------------------- access control
def test_channel_mapped_to_a_collection_searches_only_that_collection(bot):
    bot.event(mention("What is the parental leave policy?", channel=HR_CHANNEL))
    (task,) = bot.wait_queued(1)
    assert task["kwargs"]["question"]["collections"] == ["hr"]


def test_direct_messages_use_the_dm_collections(bot):
    bot.event(message("How do I reset my password?", channel=DM, channel_type="im"))
    (task,) = bot.wait_queued(1)
    assert task["kwargs"]["question"]["collections"] == ["handbook"]
    assert task["kwargs"]["reply"]["channel"] == DM


def test_channel_override_from_redis_beats_settings(bot):
    bot.app.lorebot.access.set(HR_CHANNEL, ["hr", "payroll"])
    bot.event(mention("When is payday?", channel=HR_CHANNEL))
    (task,) = bot.wait_queued(1)
    assert task["kwargs"]["question"]["collections"] == ["hr", "payroll"]


# ----------------------------------------------------------------------------- follow-ups
def test_reply_in_a_thread_the_bot_answered_is_a_follow_up_with_history(bot):
    root = mention("How many days of annual leave do I get?")
    bot.fake.add_thread_message(CHANNEL, root["ts"], root["ts"], root["text"], USER)
    bot.event(root)
    (first,) = bot.wait_queued(1)
    # The worker answered in the placeholder.
    reply = first["kwargs"]["reply"]
    bot.fake.message(
        CHANNEL, reply["message_ts"]
    ).text = "You get 27 days of paid annual leave [1]."

    follow = message(
        "and can I carry unused days over?",
        channel=CHANNEL,
        channel_type="channel",
        thread_ts=root["ts"],
    )
    bot.fake.add_thread_message(CHANNEL, root["ts"], follow["ts"], follow["text"], USER)
    bot.event(follow)
    tasks = bot.wait_queued(2)
    q = tasks[1]["kwargs"]["question"]
    assert q["text"] == "and can I carry unused days over?"
    assert [(t["role"], t["text"]) for t in q["history"]] == [
        ("user", "How many days of annual leave do I get?"),
        ("assistant", "You get 27 days of paid annual leave [1]."),
    ]
    assert tasks[1]["kwargs"]["reply"]["thread_ts"] == root["ts"]


def test_history_is_bounded_by_history_turns(bot):
    root = mention("first question")
    bot.fake.add_thread_message(CHANNEL, root["ts"], root["ts"], root["text"], USER)
    bot.event(root)
    bot.wait_queued(1)
    base = float(root["ts"])
    for i in range(10):
        bot.fake.add_thread_message(
            CHANNEL, root["ts"], f"{base + 0.001 * (i + 1):.6f}", f"turn {i}", USER
        )
    follow = message(
        "latest",
        channel=CHANNEL,
        channel_type="channel",
        thread_ts=root["ts"],
        ts=f"{base + 1:.6f}",
    )
    bot.event(follow)
    tasks = bot.wait_queued(2)
    history = tasks[1]["kwargs"]["question"]["history"]
    assert len(history) == bot.settings.slack.history_turns
    assert history[-1]["text"] == "turn 9"


def test_reply_in_someone_elses_thread_is_ignored(bot):
    chatter = message(
        "lunch anyone?", channel=CHANNEL, channel_type="channel", thread_ts="1600000000.000100"
    )
    top = message("good morning all", channel=CHANNEL, channel_type="channel")
    assert bot.event(chatter).status == 200
    assert bot.event(top).status == 200
    bot.settle()
    assert queued(bot.redis) == []
    assert [c.method for c in bot.fake.calls] == ["auth.test"]


def test_mention_in_a_thread_the_bot_never_joined_is_answered_there(bot):
    """The thread's history cannot be read (thread_not_found): answer without it."""
    ev = mention("what does this thread say about expenses?", thread_ts="1600000000.000200")
    bot.event(ev)
    (task,) = bot.wait_queued(1)
    assert task["kwargs"]["reply"]["thread_ts"] == "1600000000.000200"
    assert task["kwargs"]["question"]["history"] == []
    assert placeholders(bot.fake)[0].args["thread_ts"] == "1600000000.000200"


def test_bots_own_and_edited_messages_are_not_questions(bot):
    edited = dict(message("x", channel=DM, channel_type="im"), subtype="message_changed")
    other_bot = dict(message("beep", channel=DM, channel_type="im"), bot_id="BOTHER")
    bot.event(edited)
    bot.event(other_bot)
    bot.settle()
    assert queued(bot.redis) == []


# ----------------------------------------------------------------------------- bad input
def test_mention_without_text_gets_help_not_silence(bot):
    bot.event(mention(""))
    (call,) = bot.fake.wait_for(lambda f: ephemerals(f), what="ephemeral help")
    assert call.args["text"] == messages.EMPTY_QUESTION and call.args["user"] == USER
    bot.settle()
    assert queued(bot.redis) == []


def test_only_emoji_gets_help(bot):
    bot.event(mention(":wave: :tada: 👍"))
    (call,) = bot.fake.wait_for(lambda f: ephemerals(f), what="ephemeral help")
    assert call.args["text"] == messages.NO_WORDS
    bot.settle()
    assert queued(bot.redis) == []


def test_empty_dm_gets_a_visible_reply(bot):
    bot.event(message("   ", channel=DM, channel_type="im"))
    (call,) = bot.fake.wait_call("chat.postMessage")
    assert call.args["channel"] == DM and call.args["text"] == messages.EMPTY_QUESTION


def test_forty_thousand_characters_are_truncated_and_the_user_is_told(bot):
    long_text = ("Please explain the travel policy for long trips abroad. " * 800)[:40_000]
    bot.event(mention(long_text))
    (task,) = bot.wait_queued(1)
    text = task["kwargs"]["question"]["text"]
    assert 0 < len(text) <= bot.settings.slack.max_question_chars
    assert long_text.startswith(text)
    (call,) = placeholders(bot.fake)
    assert "I read only the first 2,000" in call.args["text"]


def test_placeholder_refused_in_channel_tells_the_user(bot):
    bot.fake.fail("chat.postMessage", "not_in_channel")
    bot.event(mention("hello?"))
    (call,) = bot.fake.wait_for(lambda f: ephemerals(f), what="ephemeral")
    assert call.args["text"] == messages.NOT_IN_CHANNEL
    bot.settle()
    assert queued(bot.redis) == []


# ----------------------------------------------------------------------------- rate limits
def test_user_rate_limit_refuses_politely_with_retry_time(bot):
    limit = bot.settings.slack.user_rate_per_min
    for i in range(limit + 1):
        bot.event(mention(f"question number {i}?"))
    bot.fake.wait_for(lambda f: ephemerals(f), what="rate-limit reply")
    bot.settle()
    assert len(queued(bot.redis)) == limit
    (refusal,) = ephemerals(bot.fake)
    assert f"You've asked {limit} questions in the last minute" in refusal.args["text"]
    assert "try again in" in refusal.args["text"]


def test_rate_limits_are_shared_across_bot_processes_and_per_workspace(
    redis_client, slack_settings
):
    from bot.state import RateLimiter

    a = RateLimiter(redis_client, user_per_min=2, team_per_min=3)
    b = RateLimiter(redis_client, user_per_min=2, team_per_min=3)  # a second bot process
    assert a.check("T1", "U1").allowed and b.check("T1", "U1").allowed
    refused = a.check("T1", "U1")
    assert not refused.allowed and refused.scope == "user" and 0 < refused.retry_after_s <= 60
    assert b.check("T1", "U2").allowed  # another user, same workspace: 3rd of 3
    team = b.check("T1", "U3")
    assert not team.allowed and team.scope == "team"
    assert a.check("T2", "U9").allowed  # another workspace is unaffected


def test_thread_marker_is_set_when_the_bot_answers(bot):
    ev = mention("Is there a gym?")
    bot.event(ev)
    bot.wait_queued(1)
    assert bot.redis.exists(contracts.thread(CHANNEL, ev["ts"]))
    assert BOT_USER_ID not in queued(bot.redis)[0]["kwargs"]["question"]["text"]
