"""👍 / 👎 clicks: stored durably with the answer they judge, exported as JSONL."""

from __future__ import annotations

import json
import sqlite3

from bot import messages, render
from lorebot import contracts
from lorebot.feedback import FeedbackStore, export_jsonl, feedback_path
from lorebot.types import Answer, Citation
from tests.bot.conftest import ADMIN, CHANNEL, USER, ephemerals


def stored_answer(qid: str = "qfb1") -> Answer:
    return Answer(
        question_id=qid,
        question="How many vacation days do we get?",
        answer="27 days [1].",
        citations=[
            Citation(
                n=1,
                chunk_id="c1",
                title="Annual Leave Policy",
                source="annual_leave.md",
                collection="handbook",
                score=0.91,
                text="Full-time employees receive 27 days.",
            )
        ],
        index_version="v3",
        adapter="a1",
    )


def answer_message(answer: Answer) -> dict:
    msg = render.answer_message(answer)
    return {
        "type": "message",
        "ts": "1700000001.000100",
        "thread_ts": "1700000000.000100",
        "text": msg["text"],
        "blocks": msg["blocks"],
        "user": "UBOT00001",
    }


def test_click_is_stored_with_question_answer_and_citations(bot):
    a = stored_answer()
    bot.redis.set(contracts.answer(a.question_id), a.model_dump_json())
    resp = bot.action("feedback_down", a.question_id, message=answer_message(a))
    assert resp.status == 200
    (thanks,) = bot.fake.wait_for(lambda f: ephemerals(f), what="thanks")
    assert thanks.args["text"] == messages.FEEDBACK_THANKS_DOWN
    assert thanks.args["thread_ts"] == "1700000000.000100"

    (row,) = list(FeedbackStore(feedback_path(bot.settings)).rows())
    assert row["question_id"] == "qfb1" and row["vote"] == -1 and row["user"] == USER
    assert row["channel"] == CHANNEL and row["team"]
    assert (
        row["question"] == "How many vacation days do we get?" and row["answer"] == "27 days [1]."
    )
    assert row["citations"][0]["source"] == "annual_leave.md"
    assert row["index_version"] == "v3" and row["adapter"] == "a1"
    assert row["message_ts"] == "1700000001.000100" and row["created_at"]


def test_changing_a_vote_replaces_it_and_other_users_add_theirs(bot):
    a = stored_answer()
    bot.redis.set(contracts.answer(a.question_id), a.model_dump_json())
    bot.action("feedback_down", a.question_id, message=answer_message(a))
    bot.fake.wait_for(lambda f: len(ephemerals(f)) == 1, what="first thanks")
    bot.action("feedback_up", a.question_id, message=answer_message(a))
    bot.fake.wait_for(lambda f: len(ephemerals(f)) == 2, what="second thanks")
    bot.action("feedback_up", a.question_id, message=answer_message(a), user=ADMIN)
    bot.fake.wait_for(lambda f: len(ephemerals(f)) == 3, what="third thanks")
    rows = {(r["user"], r["vote"]) for r in FeedbackStore(feedback_path(bot.settings)).rows()}
    assert rows == {(USER, 1), (ADMIN, 1)}


def test_click_after_the_answer_expired_keeps_what_the_message_showed(bot):
    a = stored_answer("qgone")
    bot.action("feedback_up", "qgone", message=answer_message(a))
    bot.fake.wait_for(lambda f: ephemerals(f), what="thanks")
    (row,) = list(FeedbackStore(feedback_path(bot.settings)).rows())
    assert row["answer"] == "27 days [1]." and row["vote"] == 1 and row["question"] is None


def test_forged_click_is_rejected_and_not_stored(bot):
    a = stored_answer()
    resp = bot.action("feedback_up", a.question_id, message=answer_message(a), secret="wrong")
    assert resp.status == 401
    assert (
        not feedback_path(bot.settings).exists()
        or FeedbackStore(feedback_path(bot.settings)).count() == 0
    )


def test_store_is_durable_wal_and_export_writes_jsonl(tmp_path, slack_settings):
    path = feedback_path(slack_settings)
    store = FeedbackStore(path)
    for i, vote in enumerate([1, -1, 1]):
        a = stored_answer(f"q{i}")
        store.record(
            question_id=a.question_id,
            user=f"U{i}",
            vote=vote,
            channel="C1",
            team="T1",
            message_ts=f"1.{i}",
            answer=a.model_dump(mode="json"),
            created_at=1_700_000_000 + i,
        )
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    del store

    out = tmp_path / "export" / "feedback.jsonl"
    n = export_jsonl(slack_settings, out)  # a fresh reader: what was committed is there
    assert n == 3
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question_id"] for r in lines] == ["q0", "q1", "q2"]
    assert [r["vote"] for r in lines] == [1, -1, 1]
    assert lines[1]["citations"][0]["title"] == "Annual Leave Policy"
    assert lines[0]["created_at"].startswith("2023-11-14T22:13:20")


def test_export_with_no_feedback_yet_writes_an_empty_file(tmp_path, slack_settings):
    from bot.cli import export_feedback

    out = tmp_path / "none.jsonl"
    assert export_feedback(slack_settings, out) == 0
    assert out.read_text() == ""
