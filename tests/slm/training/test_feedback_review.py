"""Feedback becomes training data: a 👎 with a suggested answer and a 👍 wait for an admin
(`lorebot feedback review`, JSONL out and in); accepted ones reach the refresh's pairs,
with their provenance, and its gate; rejected and undecided ones do not."""

from __future__ import annotations

import json
import re

import pytest

from ingest.store import open_index
from lorebot.errors import ConfigError
from lorebot.feedback import (
    FeedbackStore,
    accepted_answers,
    feedback_path,
    review_apply,
    review_export,
)
from slm.training.pairs import correction_pairs, feedback_pairs
from tests.conftest import make_settings

WRONG = "Staff get 10 days of annual leave [1]."
RIGHT = "Full-time staff get 27 days of paid annual leave a year."


def _vote(store, qid, user, vote, question, answer, abstained=False):
    store.record(
        question_id=qid,
        user=user,
        vote=vote,
        channel="C1",
        team="T1",
        message_ts="1.0",
        answer={"question": question, "answer": answer, "abstained": abstained},
    )


def test_review_round_trip_feeds_pairs_and_gate(refresh_data, embedder, tmp_path):
    s = make_settings(refresh_data)
    store = FeedbackStore(feedback_path(s))
    _vote(store, "q1", "U1", -1, "How much annual leave do I get?", WRONG)
    store.suggest(question_id="q1", user="U1", suggestion=RIGHT)
    _vote(store, "q2", "U2", 1, "Who approves expenses?", "Your manager approves them [1].")
    _vote(store, "q3", "U3", -1, "Can I work from abroad?", "Yes [1].")  # no suggestion
    _vote(store, "q4", "U4", 1, "Is there a gym?", "Yes, on floor 2 [1].")
    _vote(store, "q5", "U5", 1, "Unanswered?", "The documents do not say.", abstained=True)

    pending = tmp_path / "pending.jsonl"
    assert review_export(s, pending) == 3  # q1 (suggestion), q2 and q4 (liked answers)
    rows = [json.loads(line) for line in pending.read_text().splitlines()]
    assert {r["question_id"] for r in rows} == {"q1", "q2", "q4"}
    assert all(r["decision"] is None for r in rows)
    assert accepted_answers(s) == []  # nothing learns before a review

    decided = {"q1": "accept", "q2": "accept", "q4": "reject"}
    reviewed = tmp_path / "reviewed.jsonl"
    reviewed.write_text(
        "".join(json.dumps(r | {"decision": decided[r["question_id"]]}) + "\n" for r in rows)
        + json.dumps({"question_id": "nope", "user": "U9", "decision": "accept", "answer": "x"})
        + "\n"
    )
    counts = review_apply(s, reviewed, "ops-admin")
    assert counts == {"accepted": 2, "rejected": 1, "skipped": 0, "unknown": 1}
    assert review_export(s, tmp_path / "again.jsonl") == 0

    accepted = {a["question_id"]: a for a in accepted_answers(s)}
    assert set(accepted) == {"q1", "q2"}
    assert accepted["q1"]["answer"] == RIGHT and accepted["q1"]["kind"] == "correction"
    assert accepted["q1"]["reviewer"] == "ops-admin" and accepted["q2"]["kind"] == "liked"

    # The gate's feedback suite: the correction, not the wrong answer it replaces.
    gate = {f["question"]: f["answer"] for f in feedback_pairs(s)}
    assert gate["How much annual leave do I get?"] == RIGHT
    assert WRONG not in gate.values()

    reader = open_index(s, embedder=embedder)
    try:
        pairs = {p.scores["question_id"]: p for p in correction_pairs(s, reader, ["handbook"])}
    finally:
        reader.close()
    leave = pairs["q1"]
    assert leave.answer == RIGHT and leave.teacher == "feedback:correction"
    assert leave.collection == "handbook" and "annual_leave" in leave.document
    assert leave.scores["reviewer"] == "ops-admin" and leave.scores["user"] == "U1"
    assert set(pairs) == {"q1", "q2"}


def test_a_malformed_review_line_is_a_config_error(tmp_path):
    s = make_settings(tmp_path / "data")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"decision": "accept"}\n')
    with pytest.raises(ConfigError, match="line 1"):
        review_apply(s, bad, "admin")


def test_an_answer_written_in_the_console_is_a_reviewed_training_answer(tmp_path):
    """The console's correction (an admin writes the right answer to a 👎) needs no second
    review: it is an accepted answer for the training pairs and the gate, by that admin."""
    s = make_settings(tmp_path)
    store = FeedbackStore(feedback_path(s))
    _vote(store, "q1", "U1", -1, "How much annual leave do I get?", WRONG)
    assert accepted_answers(s) == []
    store.correct(question_id="q1", answer=RIGHT, admin="console-admin")
    (row,) = accepted_answers(s)
    assert row["question"] == "How much annual leave do I get?" and row["answer"] == RIGHT
    assert row["kind"] == "correction" and row["reviewer"] == "console-admin"
    assert {f["question"]: f["answer"] for f in feedback_pairs(s)} == {
        "How much annual leave do I get?": RIGHT
    }


def test_a_liked_read_answer_gives_the_gate_its_short_answer(tmp_path):
    """A 👍 on a read-mode answer keeps its short answer beside the whole text: the gate's
    feedback suite compares short answers (what it scores in read mode); a liked generated
    answer (no short answer) is still its whole text."""
    s = make_settings(tmp_path)
    store = FeedbackStore(feedback_path(s))
    shown = "27 days [1]\n> Full-time staff get 27 days of paid annual leave a year. [1]"
    store.record(
        question_id="q1",
        user="U1",
        vote=1,
        channel="C1",
        team="T1",
        message_ts="1.0",
        answer={"question": "How much leave?", "answer": shown, "short_answer": "27 days"},
    )
    _vote(store, "q2", "U2", 1, "Who approves expenses?", "Your manager approves them [1].")
    (row,) = [r for r in store.rows() if r["question_id"] == "q1"]
    assert row["answer"] == shown and row["short_answer"] == "27 days"
    assert {f["question"]: f["answer"] for f in feedback_pairs(s)} == {
        "How much leave?": "27 days",
        "Who approves expenses?": "Your manager approves them.",
    }


def test_a_store_from_before_short_answers_is_read_and_then_given_the_column(tmp_path):
    import sqlite3

    s = make_settings(tmp_path)
    path = feedback_path(s)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE feedback (question_id TEXT NOT NULL, user TEXT NOT NULL, vote INTEGER,"
        " channel TEXT, team TEXT, message_ts TEXT, question TEXT, answer TEXT,"
        " citations TEXT NOT NULL DEFAULT '[]', abstained INTEGER, index_version TEXT,"
        " adapter TEXT, created_at REAL NOT NULL, latency_ms REAL,"
        " PRIMARY KEY (question_id, user))"
    )
    old.execute(
        "INSERT INTO feedback (question_id, user, vote, question, answer, created_at)"
        " VALUES ('q1', 'U1', 1, 'Who approves expenses?', 'Your manager [1].', 1.0)"
    )
    old.commit()
    old.close()
    # Read-only (the refresh never migrates): the whole answer, as before.
    assert [f["answer"] for f in feedback_pairs(s)] == ["Your manager."]
    store = FeedbackStore(path)  # the bot's store adds the column
    _vote(store, "q2", "U2", 1, "How much leave?", "27 days [1]")
    assert {r["question_id"]: r["short_answer"] for r in store.rows()} == {"q1": None, "q2": None}


# ----------------------------------------------------------------------------- reviewed answers
LATE = "What happens if I submit a claim late?"
LATE_RIGHT = (
    "Claims older than 45 days need written approval from the Finance Director and may be rejected."
)
BONUS = "What is the code for the Zephyr retention bonus?"


class _Scorer:
    """The reader's model seam without a model: every phrase scores the same, so the
    phrase prior decides (what is tested here is which sentences are read, not the pick)."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def score_answers(self, messages, answers):
        self.read.append(messages[-1]["content"])
        return [0.0] * len(answers)


def _cited_vote(store, qid, user, question, collections):
    store.record(
        question_id=qid,
        user=user,
        vote=-1,
        channel="C1",
        team="T1",
        message_ts="1.0",
        answer={
            "question": question,
            "answer": "45 days [1]",
            "citations": [
                {"n": i, "collection": c, "chunk_id": f"x{i}", "title": "t", "source": "s"}
                for i, c in enumerate(collections, start=1)
            ],
        },
    )


def _accept_all(s, tmp_path, reviewer="ops-admin"):
    pending = tmp_path / "pending.jsonl"
    review_export(s, pending)
    rows = [json.loads(line) | {"decision": "accept"} for line in pending.read_text().splitlines()]
    reviewed = tmp_path / "reviewed.jsonl"
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return review_apply(s, reviewed, reviewer)


def _ask(s, reader, text, collections, reviewed, scorer=None):
    from lorebot.types import Question
    from slm.serving.answer import answer_question

    return answer_question(
        Question(text=text, collections=collections),
        reader,
        scorer or _Scorer(),
        retrieval=s.retrieval,
        model=s.model,
        reviewed=reviewed,
    )


def test_the_refresh_publishes_corrections_under_the_collections_they_were_asked_in(
    refresh_data, embedder, tmp_path
):
    """A correction is shown only to askers who may search every collection the corrected
    answer listed: one given in the restricted "hr" collection never reaches a handbook
    asker (nor its words), one given in "handbook" does not answer an "hr"-only asker, and one
    whose answer listed no passage has no known scope and is not published at all."""
    from slm.serving.reviewed import for_settings
    from slm.training.refresh import run_refresh
    from tests.slm.training.conftest import CANARY

    # training.collections = []: the refresh has nothing to train and stops after publishing.
    s = make_settings(refresh_data, training={"collections": []})
    store = FeedbackStore(feedback_path(s))
    _cited_vote(store, "q1", "U1", LATE, ["handbook"])
    store.suggest(question_id="q1", user="U1", suggestion=LATE_RIGHT)
    _cited_vote(store, "q2", "U2", BONUS, ["hr"])
    store.suggest(question_id="q2", user="U2", suggestion=f"The bonus code is {CANARY}.")
    _cited_vote(store, "q3", "U3", "Is there a gym?", [])
    store.suggest(question_id="q3", user="U3", suggestion="Yes, on floor 2.")
    assert _accept_all(s, tmp_path)["accepted"] == 3
    assert len(for_settings(s)) == 0  # nothing is shown before the refresh publishes it

    report = run_refresh(s, embedder=embedder)
    assert report.status == "skipped"
    assert report.reviewed == {"published": 2, "unscoped": 1, "withheld": 0}
    reviewed = for_settings(s)
    assert len(reviewed) == 2

    def match(text, collections):
        found = reviewed.match(text, collections, embedder.encode)
        return found.question_id if found else None

    assert match(LATE, ["handbook"]) == "q1" and match(LATE, None) == "q1"
    # reworded, it is the same question; the opposite case is not (bench/reviewed_match.py)
    assert match("What happens when I submit my claim late?", ["handbook"]) == "q1"
    assert match("What happens if I submit a claim early?", ["handbook"]) is None
    assert match(LATE, ["hr"]) is None
    assert match(BONUS, ["hr"]) == "q2" and match(BONUS, ["handbook", "hr"]) == "q2"
    assert match(BONUS, ["handbook"]) is None
    assert match("Is there a gym?", None) is None

    reader = open_index(s, embedder=embedder)
    try:
        handbook = _ask(s, reader, BONUS, ["handbook"], reviewed)
        hr = _ask(s, reader, BONUS, ["hr"], reviewed)
    finally:
        reader.close()
    shown = handbook.answer + " ".join(c.text + c.title for c in handbook.citations)
    assert CANARY not in shown and all(c.title != "Reviewed answer" for c in handbook.citations)
    assert hr.citations[0].title == "Reviewed answer" and CANARY in hr.answer


def test_a_reviewed_answer_is_read_cited_with_provenance_and_checked_against_the_documents(
    refresh_data, embedder, tmp_path
):
    """The reader reads the reviewed answer, which is quoted whole and cited as a reviewed
    answer (the original question, who suggested it, who accepted it); a passage that states
    it is cited beside it. A correction the documents do not state (here: a deadline they
    contradict) is still shown, its citation saying so, the passages listed as not cited."""
    from lorebot.feedback import publish_reviewed
    from slm.serving.reviewed import for_settings

    s = make_settings(refresh_data)
    store = FeedbackStore(feedback_path(s))
    _cited_vote(store, "q1", "U1", LATE, ["handbook"])
    store.suggest(question_id="q1", user="U1", suggestion=LATE_RIGHT)
    _cited_vote(store, "q2", "U2", "How late can I submit a claim?", ["handbook"])
    store.suggest(question_id="q2", user="U2", suggestion="Up to 90 days after the expense.")
    assert _accept_all(s, tmp_path, reviewer="alice")["accepted"] == 2
    assert publish_reviewed(s) == {"published": 2, "unscoped": 0, "withheld": 0}
    reviewed = for_settings(s)

    reader = open_index(s, embedder=embedder)
    try:
        scorer = _Scorer()
        late = _ask(s, reader, LATE, ["handbook"], reviewed, scorer)
        contra = _ask(s, reader, "How late can I submit a claim?", ["handbook"], reviewed)
    finally:
        reader.close()

    assert not late.abstained and "Finance Director" in late.answer
    # the handbook states it in two chunks (the 45 days in one, the Finance Director in the
    # next): both are cited beside the reviewed answer
    assert re.search(re.escape(f"> {LATE_RIGHT} [1][2]") + r"(\[3\])?$", late.answer)
    assert late.short_answer and late.short_answer in LATE_RIGHT
    assert scorer.read and all("Finance Director" in m for m in scorer.read)  # its sentence
    first, *documents = late.citations
    assert first.title == "Reviewed answer" and first.cited and first.collection == "handbook"
    assert "accepted by alice" in first.source and "suggested by U1" in first.source
    assert LATE in first.heading and "not stated" not in first.heading
    assert documents and all(c.cited and c.source == "expenses.md" for c in documents)

    assert "90 days" in contra.answer and contra.citations[0].title == "Reviewed answer"
    assert "not stated in the documents" in contra.citations[0].heading
    assert len(contra.citations) > 1 and not any(c.cited for c in contra.citations[1:])


@pytest.mark.parametrize(
    ("answer", "problem"), [("  ", "without an answer"), ("x" * 1001, "longer than 1000")]
)
def test_an_empty_or_overlong_accepted_answer_is_refused_and_nothing_is_applied(
    tmp_path, answer, problem
):
    s = make_settings(tmp_path / "data")
    store = FeedbackStore(feedback_path(s))
    _vote(store, "q1", "U1", -1, "How much annual leave do I get?", WRONG)
    store.suggest(question_id="q1", user="U1", suggestion=RIGHT)
    _vote(store, "q2", "U2", -1, "Who approves expenses?", "Nobody [1].")
    store.suggest(question_id="q2", user="U2", suggestion="Your line manager.")
    pending = tmp_path / "pending.jsonl"
    review_export(s, pending)
    rows = [json.loads(line) | {"decision": "accept"} for line in pending.read_text().splitlines()]
    rows[1]["suggestion"] = answer
    reviewed = tmp_path / "reviewed.jsonl"
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=f"line 2 accepts .*{problem}"):
        review_apply(s, reviewed, "ops-admin")
    assert accepted_answers(s) == []  # the first line was not applied either


def test_corrections_given_where_answers_follow_the_askers_permissions_are_withheld(
    refresh_data, embedder, tmp_path
):
    """A collection fed by an answer-as-the-asker source (here a Confluence space) may hold
    documents only the asker could read, which the corrected answer and its correction may
    quote: such a correction is not published (it would reach the collection's other
    askers); the others are."""
    from slm.serving.reviewed import for_settings
    from slm.training.refresh import run_refresh

    wiki = {"kind": "confluence", "url": "http://127.0.0.1:9/", "spaces": ["X"]}
    s = make_settings(
        refresh_data,
        training={"collections": []},
        sources={"defined": {"wiki": wiki | {"collection": "hr"}}},
    )
    store = FeedbackStore(feedback_path(s))
    _cited_vote(store, "q1", "U1", LATE, ["handbook"])
    store.suggest(question_id="q1", user="U1", suggestion=LATE_RIGHT)
    _cited_vote(store, "q2", "U2", BONUS, ["hr"])
    store.suggest(question_id="q2", user="U2", suggestion="The bonus code is in the HR wiki.")
    assert _accept_all(s, tmp_path)["accepted"] == 2
    report = run_refresh(s, embedder=embedder)
    assert report.reviewed == {"published": 1, "unscoped": 0, "withheld": 1}
    assert [a.question_id for a in for_settings(s).answers] == ["q1"]
