"""👍 / 👎 clicks: stored durably with the answer they judge, exported as JSONL; a 👎 opens
an optional modal whose suggested answer waits, with its provenance, for an admin's review."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bot import messages, render
from lorebot import contracts
from lorebot.feedback import (
    MAX_SUGGESTION_CHARS,
    FeedbackStore,
    ReviewQueueFull,
    export_jsonl,
    feedback_path,
)
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


# ---------------------------------------------------------------- the 👎 suggestion modal
def _down_and_modal(bot, a: Answer, user: str = USER) -> dict:
    """Click 👎 on a stored answer; the modal the bot opened with the click's trigger id."""
    bot.redis.set(contracts.answer(a.question_id), a.model_dump_json())
    n = len(bot.fake.views)
    assert (
        bot.action("feedback_down", a.question_id, message=answer_message(a), user=user).status
        == 200
    )
    bot.fake.wait_for(lambda f: len(f.views) > n, what="views.open")
    return bot.fake.views[-1]


def test_thumbs_down_opens_a_modal_whose_suggestion_is_stored_with_provenance(bot, tmp_path):
    from lorebot.feedback import review_export

    a = stored_answer("qsug1")
    view = _down_and_modal(bot, a)
    assert view["callback_id"] == render.VIEW_SUGGEST and view["type"] == "modal"
    (opened,) = bot.fake.calls_to("views.open")
    assert opened.token == "xoxb-test-token"
    (text_input,) = [b for b in view["blocks"] if b["type"] == "input"]
    assert text_input["block_id"] == render.BLOCK_SUGGESTION
    assert text_input["element"]["max_length"] == MAX_SUGGESTION_CHARS
    assert "How many vacation days" in json.dumps(view["blocks"])

    right = "Full-time staff get 27 days   of paid annual leave a year."
    resp = bot.submit_view(view, {render.BLOCK_SUGGESTION: {render.ACTION_SUGGESTION: right}})
    assert resp.status == 200 and resp.body in ("", "{}")  # a plain ack closes the modal
    bot.fake.wait_for(
        lambda f: any(c.args["text"] == messages.SUGGEST_THANKS for c in ephemerals(f)),
        what="the suggestion's thanks",
    )

    store = FeedbackStore(feedback_path(bot.settings))
    (s,) = store.suggestions()
    assert s["suggestion"] == "Full-time staff get 27 days of paid annual leave a year."
    assert (s["question_id"], s["user"], s["decision"]) == ("qsug1", USER, "pending")
    assert s["question"] == "How many vacation days do we get?"
    assert s["shown_answer"] == "27 days [1]."
    assert (s["index_version"], s["adapter"], s["channel"]) == ("v3", "a1", CHANNEL)
    assert s["created_at"] > 0 and s["source"] == "slack"

    # What `lorebot feedback review --out` writes for the admin.
    out = tmp_path / "pending.jsonl"
    assert review_export(bot.settings, out) == 1
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["suggestion"] == s["suggestion"] and line["vote"] == -1
    assert line["index_version"] == "v3" and line["adapter"] == "a1"
    assert line["suggested_at"].startswith("20") and line["decision"] is None


def test_no_modal_for_a_thumbs_up_or_an_answer_whose_question_is_gone(bot):
    a = stored_answer("qup")
    bot.redis.set(contracts.answer(a.question_id), a.model_dump_json())
    bot.action("feedback_up", a.question_id, message=answer_message(a))
    bot.action("feedback_down", "qgone2", message=answer_message(stored_answer("qgone2")))
    bot.fake.wait_for(lambda f: len(ephemerals(f)) == 2, what="two thanks")
    assert bot.fake.calls_to("views.open") == [] and bot.fake.views == []


def test_a_bad_submission_is_answered_in_the_modal_and_not_stored(bot):
    a = stored_answer("qsug2")
    view = _down_and_modal(bot, a)

    def submit(text: str, **kw):
        return bot.submit_view(
            view, {render.BLOCK_SUGGESTION: {render.ACTION_SUGGESTION: text}}, **kw
        )

    for text, error in (
        ("   ", messages.SUGGEST_EMPTY),
        ("x" * (MAX_SUGGESTION_CHARS + 1), messages.SUGGEST_TOO_LONG.format(limit=1000)),
    ):
        resp = submit(text)
        assert resp.status == 200
        assert resp.json() == {
            "response_action": "errors",
            "errors": {render.BLOCK_SUGGESTION: error},
        }
    # Someone who did not vote on that answer has nothing to attach a suggestion to.
    resp = submit("27 days.", user=ADMIN)
    assert resp.json()["errors"] == {render.BLOCK_SUGGESTION: messages.SUGGEST_NO_VOTE}
    # A forged submission never reaches the store.
    assert submit("27 days.", secret="wrong").status == 401
    assert FeedbackStore(feedback_path(bot.settings)).suggestions() == []


def test_the_review_queue_is_bounded_per_user_and_in_all(slack_settings):
    store = FeedbackStore(feedback_path(slack_settings))
    for i in range(3):
        a = stored_answer(f"qb{i}")
        for user in ("U1", "U2"):
            store.record(
                question_id=a.question_id,
                user=user,
                vote=-1,
                channel="C1",
                team="T1",
                message_ts="1.0",
                answer=a.model_dump(mode="json"),
            )
    bound = dict(max_pending_per_user=2, max_pending=3)
    assert store.suggest(question_id="qb0", user="U1", suggestion="27 days.", **bound)
    assert store.suggest(question_id="qb1", user="U1", suggestion="27 days.", **bound)
    with pytest.raises(ReviewQueueFull):
        store.suggest(question_id="qb2", user="U1", suggestion="27 days.", **bound)
    # Replacing one's own waiting suggestion is always allowed.
    assert store.suggest(question_id="qb1", user="U1", suggestion="27 days a year.", **bound)
    assert store.suggest(question_id="qb0", user="U2", suggestion="27 days.", **bound)
    with pytest.raises(ReviewQueueFull):
        store.suggest(question_id="qb1", user="U2", suggestion="27 days.", **bound)
    # No vote, nothing stored; too long, refused.
    assert not store.suggest(question_id="qb0", user="U9", suggestion="27 days.")
    with pytest.raises(ValueError):
        store.suggest(question_id="qb2", user="U2", suggestion="x" * (MAX_SUGGESTION_CHARS + 1))
    assert len(store.suggestions()) == 3
    # An admin's decision frees the place.
    assert store.decide(question_id="qb0", user="U1", accept=False, reviewer="UA", answer=None)
    assert store.suggest(question_id="qb2", user="U1", suggestion="27 days.", **bound)
