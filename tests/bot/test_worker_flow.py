"""Signed event → bolt over HTTP → real Redis → a real Celery worker → fake Slack.

The worker here runs in-process (celery.contrib.testing) with a scripted answer task
that follows the lead's worker contract exactly (``SlackDelivery.from_settings`` →
``on_token`` per piece → ``finish`` / ``fail``), so the Slack edge is tested against a
real broker and a real worker without loading the model. The real model runs in
``test_e2e.py``. Failure paths ("never silent") are here: a crashing task, a handled
error, no worker at all, a worker whose delivery could not reach Slack.
"""

from __future__ import annotations

import time

import pytest

from bot import messages
from lorebot import contracts
from lorebot.types import Answer, Citation, Question
from tests.bot.conftest import ADMIN, CHANNEL, mention, placeholders
from workers import client as wc

pytestmark = pytest.mark.integration

SCRIPT = [
    "Full-time",
    " employees",
    " get",
    " 27",
    " days",
    " of",
    " paid",
    " annual",
    " leave",
    " [1].",
]


def make_worker_app(settings):
    from celery import Celery

    from workers.delivery import SlackDelivery

    app = Celery("slack-edge-test-worker")
    app.conf.update(wc.celery_config(settings.redis.effective_url))

    @app.task(name=contracts.TASK_ANSWER, shared=False)
    def answer(question: dict, reply: dict | None = None) -> dict:
        q = Question.model_validate(question)
        if "crash" in q.text:
            raise RuntimeError("simulated worker bug")  # no delivery.fail: the watchdog must notice
        delivery = SlackDelivery.from_settings(settings, reply) if reply else None
        if "no index" in q.text:
            if delivery:
                delivery.fail(
                    "no index has been built yet (fix: run `lorebot ingest`)", q.question_id
                )
            return {
                "question_id": q.question_id,
                "error": {
                    "type": "IndexMissingError",
                    "message": "no index has been built yet",
                    "fix": None,
                },
            }
        for piece in SCRIPT:
            if delivery:
                delivery.on_token(piece)
        result = Answer(
            question_id=q.question_id,
            question=q.text,
            answer="".join(SCRIPT),
            citations=[
                Citation(
                    n=1,
                    chunk_id="annual-1",
                    title="Annual Leave Policy",
                    source="annual_leave.md",
                    collection=(q.collections or ["handbook"])[0],
                    score=0.92,
                    text="Full-time employees receive 27 days of paid annual leave per leave year.",
                )
            ],
            index_version="v-test",
            adapter=None,
            timings_ms={"total": 12.0},
        )
        if delivery:
            delivery.finish(result)
        return result.model_dump(mode="json")

    @app.task(name="lorebot.status", shared=False)
    def status() -> dict:
        return {
            "index": {"version": "v-test", "documents": 12, "chunks": 345},
            "adapter": None,
            "worker": "test-host",
        }

    return app


@pytest.fixture()
def worker(slack_settings, redis_client):
    from celery.contrib.testing.worker import start_worker

    app = make_worker_app(slack_settings)
    with start_worker(
        app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10
    ):
        yield app


def final_of(fake, reply) -> object:
    return fake.message(reply["channel"], reply["message_ts"])


def wait_state(bot, qid, states, timeout=20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, _ = bot.app.lorebot.gateway.state(qid)
        if state in states:
            return state
        time.sleep(0.05)
    raise AssertionError(f"task {qid} never reached {states}")


def pending_qid(bot, timeout=15.0) -> str:
    """The id of the one question the bot submitted (it is watched from submission on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = bot.app.lorebot.watchdog.pending()
        if pending:
            (qid,) = pending
            return qid
        time.sleep(0.02)
    raise AssertionError("no question was submitted")


def section_texts(msg) -> str:
    return "\n".join(b["text"]["text"] for b in msg.blocks if b["type"] == "section")


def context_texts(msg) -> str:
    return "\n".join(e["text"] for b in msg.blocks if b["type"] == "context" for e in b["elements"])


def test_question_streams_and_ends_in_the_final_block_kit_message(bot, worker):
    sent = time.time()
    bot.event(mention("How many days of annual leave do I get?"))
    (ph,) = bot.fake.wait_for(lambda f: placeholders(f), what="placeholder")
    reply = bot.fake.wait_for(
        lambda f: (
            f.calls_to("chat.update")
            and [c for c in f.calls_to("chat.update") if c.args["blocks"][-1]["type"] == "actions"]
        ),
        timeout=30,
        what="final update",
    )[0]
    msg = bot.fake.message(CHANNEL, reply.args["ts"])
    wait_state(bot, pending_qid(bot), {"SUCCESS"})
    assert section_texts(msg).startswith(
        "Full-time employees get 27 days of paid annual leave [1]."
    )
    assert "*[1]* *Annual Leave Policy* `annual_leave.md`" in section_texts(msg)
    assert "index `v-test`" in context_texts(msg)
    assert msg.blocks[-1]["elements"][0]["action_id"] == "feedback_up"
    # the bot's watchdog stands down: the worker delivered
    assert bot.app.lorebot.watchdog.check_once() == 0
    assert bot.redis.hlen(contracts.PENDING) == 0
    print(
        f"\nplaceholder after {1000 * (ph.at - sent):.0f} ms; "
        f"final after {1000 * (reply.at - sent):.0f} ms"
    )


def test_crashing_worker_task_turns_the_placeholder_into_an_error(bot, worker):
    bot.event(mention("please crash now"))
    qid = pending_qid(bot)
    wait_state(bot, qid, {"FAILURE"})
    assert bot.app.lorebot.watchdog.check_once() == 1
    ts = [ts for (ch, ts), m in bot.fake.messages.items() if m.text.startswith("Sorry")][0]
    msg = bot.fake.message(CHANNEL, ts)
    assert "the worker answering it stopped with an error (RuntimeError)" in section_texts(msg)
    assert f"`{qid}`" in context_texts(msg)
    assert bot.app.lorebot.watchdog.check_once() == 0  # reported once


def test_handled_worker_error_is_shown_once(bot, worker):
    bot.event(mention("what if there is no index yet?"))
    bot.fake.wait_for(
        lambda f: [m for m in f.messages.values() if m.text.startswith("Sorry")],
        timeout=30,
        what="error message from the worker",
    )
    assert bot.app.lorebot.watchdog.check_once() == 0
    sorry = [m for m in bot.fake.messages.values() if m.text.startswith("Sorry")]
    assert len(sorry) == 1 and "no index has been built yet" in section_texts(sorry[0])


def test_no_worker_running_is_reported_not_silent(bot):
    bot.event(mention("anyone there?"))
    bot.fake.wait_for(lambda f: placeholders(f), what="placeholder")
    bot.wait_queued(1)
    wd = bot.app.lorebot.watchdog
    wd.no_worker_grace_s = 0.0
    assert wd.check_once() == 1
    msg = [m for m in bot.fake.messages.values() if m.text.startswith("Sorry")][0]
    assert messages.NO_WORKER in section_texts(msg)
    assert wd.check_once() == 0 and bot.redis.hlen(contracts.PENDING) == 0


def test_question_stuck_past_its_deadline_times_out_visibly(bot, worker):
    bot.redis.set(contracts.delivered("x"), 1)  # unrelated marker must not matter
    wd = bot.app.lorebot.watchdog
    reply = {"channel": CHANNEL, "thread_ts": "1.0", "message_ts": None}
    posted = bot.app.client.chat_postMessage(channel=CHANNEL, text="Searching…")
    reply["message_ts"] = posted["ts"]
    wd.watch("never-enqueued", reply)
    wd.max_wait_s = 0.0
    assert wd.check_once() == 1
    assert "no answer arrived within" in section_texts(bot.fake.message(CHANNEL, posted["ts"]))


def test_watchdog_delivers_an_answer_the_worker_could_not(bot, worker):
    bot.fake.fail("chat.update", "internal_error", times=1000)
    bot.event(mention("How many days of annual leave do I get?"))
    qid = pending_qid(bot)
    reply = bot.app.lorebot.watchdog.pending()[qid]["reply"]
    wait_state(bot, qid, {"SUCCESS"}, timeout=30)
    bot.fake.clear_failures()  # Slack is back
    assert bot.app.lorebot.watchdog.check_once() == 0
    msg = [m for m in bot.fake.messages.values() if m.blocks and m.blocks[-1]["type"] == "actions"]
    assert len(msg) == 1 and "27 days" in section_texts(msg[0])
    assert msg[0].ts == reply["message_ts"]  # the placeholder itself, not a new message
    assert bot.redis.get(contracts.answer(qid))  # feedback will find it


def test_status_reports_index_workers_and_queues(bot, worker):
    bot.command("/lorebot", "status", user=ADMIN, response_id="st")
    (r,) = bot.fake.wait_for(lambda f: f.responses, timeout=30, what="status")
    assert "index version `v-test`" in r["text"]
    assert "documents 12" in r["text"] and "chunks 345" in r["text"]
    assert "live workers (1)" in r["text"]
    assert "queue depth: answer 0, ingest 0, train 0" in r["text"]
