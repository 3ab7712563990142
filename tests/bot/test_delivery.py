"""The worker's Slack delivery against the fake Web API: throttling, 429, final message.

Throttling is tested with a hand-driven clock, so no assertion depends on how fast the
machine is: while the clock stands still, no second update may be sent.
"""

from __future__ import annotations

import json
import threading

import pytest
from slack_sdk import WebClient

from lorebot import contracts
from lorebot.types import Answer, Citation
from workers.delivery import SlackDelivery

CH = "CDELIVER1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, s: float) -> None:
        with self._lock:
            self.now += s


@pytest.fixture()
def web(fake_slack):
    return WebClient(token="xoxb-test-token", base_url=fake_slack.api_url)


@pytest.fixture()
def placeholder(web, fake_slack):
    root = web.chat_postMessage(channel=CH, text="question?")["ts"]
    ts = web.chat_postMessage(channel=CH, thread_ts=root, text="Searching…")["ts"]
    return {
        "channel": CH,
        "thread_ts": root,
        "message_ts": ts,
        "team": "T1",
        "user": "U1",
        "started_at": 0.0,
        "question_id": "qdeliv1",
    }


def final_answer() -> Answer:
    return Answer(
        question_id="qdeliv1",
        question="How much leave?",
        answer="You get 27 days of paid annual leave [1].",
        citations=[
            Citation(
                n=1,
                chunk_id="c1",
                title="Annual Leave Policy",
                source="annual_leave.md",
                collection="handbook",
                score=0.9,
                text="Full-time employees receive 27 days.",
            )
        ],
        index_version="v1",
        adapter=None,
    )


def updates(fake, ok_only=True):
    return [c for c in fake.calls if c.method == "chat.update" and (c.status == 200 or not ok_only)]


def test_tokens_fed_fast_give_one_update_per_interval(web, fake_slack, placeholder, redis_client):
    clock = Clock()
    d = SlackDelivery(web, placeholder, redis=redis_client, clock=clock)
    for piece in ["You", " get", " 27"]:
        d.on_token(piece)
    fake_slack.wait_for(lambda f: updates(f), what="first streamed update")
    for piece in [" days", " of", " paid", " annual", " leave"] * 20:
        d.on_token(piece)  # the clock stands still: no update may go out
    assert d.finish(final_answer())
    streamed = [
        c
        for c in updates(fake_slack)
        if c.args["blocks"][-1]["type"] == "context"
        and "writing" in c.args["blocks"][-1]["elements"][0]["text"]
    ]
    assert len(streamed) == 1
    assert streamed[0].args["text"].startswith("You")
    final = fake_slack.message(CH, placeholder["message_ts"])
    assert final.text == "You get 27 days of paid annual leave [1]."
    assert final.blocks[-1]["type"] == "actions"
    assert any("annual_leave.md" in b.get("text", {}).get("text", "") for b in final.blocks)


def test_a_second_update_follows_once_the_interval_has_passed(web, fake_slack, placeholder):
    clock = Clock()
    d = SlackDelivery(web, placeholder, clock=clock)
    d.on_token("one")
    fake_slack.wait_for(lambda f: d.updates == 1, what="first update acknowledged")
    d.on_token(" two")
    clock.advance(1.01)
    fake_slack.wait_for(lambda f: len(updates(f)) >= 2, what="second update")
    assert updates(fake_slack)[1].args["text"] == "one two"
    d.finish(final_answer())


def test_429_retry_after_is_honoured_while_streaming(web, fake_slack, placeholder):
    clock = Clock()
    fake_slack.rate_limit("chat.update", retry_after=3)
    d = SlackDelivery(web, placeholder, clock=clock)
    d.on_token("hello")
    fake_slack.wait_for(lambda f: any(c.status == 429 for c in f.calls), what="the 429")
    fake_slack.wait_for(lambda f: d.rate_limited == 1, what="429 noticed")
    assert d._next_allowed >= clock() + 3  # waits Retry-After, not the 1 s interval
    clock.advance(3.01)
    fake_slack.wait_for(lambda f: updates(f), what="update after Retry-After")
    assert updates(fake_slack)[0].args["text"] == "hello"
    assert d.finish(final_answer())


def test_final_update_waits_out_429s(web, fake_slack, placeholder):
    slept = []
    fake_slack.rate_limit("chat.update", retry_after=2, times=2)
    d = SlackDelivery(web, placeholder, sleep=slept.append)
    assert d.finish(final_answer())
    assert slept == [2.0, 2.0]
    assert fake_slack.message(CH, placeholder["message_ts"]).blocks[-1]["type"] == "actions"


def test_generation_is_never_broken_by_slack_errors(web, fake_slack, placeholder):
    fake_slack.fail("chat.update", "internal_error", times=50)
    d = SlackDelivery(web, placeholder, clock=Clock())
    for i in range(200):
        d.on_token(f" t{i}")  # must not raise
    assert d.finish(final_answer()) is False  # and finish reports instead of raising


def test_deleted_placeholder_becomes_a_new_thread_reply(web, fake_slack, placeholder):
    fake_slack.fail("chat.update", "message_not_found")
    d = SlackDelivery(web, placeholder)
    assert d.finish(final_answer())
    post = fake_slack.calls_to("chat.postMessage")[-1]
    assert post.args["thread_ts"] == placeholder["thread_ts"]
    assert post.args["blocks"][-1]["type"] == "actions"


def test_finish_records_the_answer_for_feedback_and_the_watchdog(
    web, fake_slack, placeholder, redis_client
):
    d = SlackDelivery(web, placeholder, redis=redis_client)
    d.finish(final_answer())
    assert redis_client.get(contracts.delivered("qdeliv1")) == b"worker"
    stored = json.loads(redis_client.get(contracts.answer("qdeliv1")))
    assert (
        stored["answer"].startswith("You get 27 days")
        and stored["citations"][0]["source"] == "annual_leave.md"
    )
    assert redis_client.exists(contracts.thread(CH, placeholder["thread_ts"]))


def test_fail_turns_the_placeholder_into_an_error_with_reference(
    web, fake_slack, placeholder, redis_client
):
    d = SlackDelivery(web, placeholder, redis=redis_client)
    d.on_token("partial")
    assert d.fail("no index has been built yet (fix: run lorebot ingest)", "ref77")
    msg = fake_slack.message(CH, placeholder["message_ts"])
    text = " ".join(b.get("text", {}).get("text", "") for b in msg.blocks)
    context = " ".join(
        e["text"] for b in msg.blocks if b["type"] == "context" for e in b["elements"]
    )
    assert "no index has been built yet" in text and "`ref77`" in context
    assert redis_client.exists(contracts.delivered("qdeliv1"))


def test_from_settings_uses_the_configured_api_url(slack_settings, fake_slack, placeholder):
    d = SlackDelivery.from_settings(slack_settings, placeholder)
    assert d.finish(final_answer())
    assert fake_slack.calls_to("chat.update")[-1].token == "xoxb-test-token"
