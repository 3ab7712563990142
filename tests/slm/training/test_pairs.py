"""Pair generation and its filters, on a real index of a small corpus (no model: the teacher
is either scripted or a local HTTP server speaking the OpenAI chat API)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ingest.store import open_index
from lorebot.types import Chunk
from slm.serving.prompt import NOT_FOUND, reader_messages
from slm.training.pairs import (
    FilterStats,
    GeneratorTeacher,
    OpenAITeacher,
    Pair,
    TeacherError,
    answer_first_pairs,
    extract_pairs,
    filter_pairs,
    format_problem,
    iter_chunks,
    pair_from_chunk,
    support_score,
    teacher_pairs,
    trainable_collections,
)
from slm.training.raft import build_examples
from tests.conftest import make_settings
from tests.slm.training.conftest import CANARY
from tests.support.fakes import FakeGenerator


def _chunk(text: str, heading: str = "", title: str = "Expenses", cid: str = "c1") -> Chunk:
    return Chunk(
        chunk_id=cid,
        text=text,
        title=title,
        heading=heading,
        source="expenses.md",
        collection="handbook",
    )


def _pair(q: str, a: str, chunk: Chunk | None = None) -> Pair:
    return pair_from_chunk(
        chunk or _chunk("Receipts are required for claims over 25 euros."), q, a, "test"
    )


@pytest.mark.parametrize(
    ("question", "answer", "problem"),
    [
        ("How much can I claim for lunch?", "Up to 15 euros a day.", None),
        ("How much can I claim for lunch", "Up to 15 euros.", "does not end with ?"),
        ("What is the passage about?", "Expenses.", "passage"),
        ("Why?", "Because.", "question has 1 words"),
        ("How much can I claim for lunch?", NOT_FOUND, "refusal"),
        ("How much can I claim for lunch?", "word " * 70, "answer has 70 words"),
    ],
)
def test_format_check(question, answer, problem):
    found = format_problem(_pair(question, answer))
    assert (found is None) if problem is None else (problem in found)


def test_support_needs_the_chunks_words_and_no_invented_numbers():
    chunk = _chunk("Receipts are required for claims over 25 euros. Submit them within 30 days.")
    share, invented = support_score("Receipts are required for claims over 25 euros.", chunk)
    assert share == 1.0 and invented == []
    share, invented = support_score("Receipts are required for claims over 40 euros.", chunk)
    assert invented == ["40"]
    share, _ = support_score("Bicycles are reimbursed by the finance office.", chunk)
    assert share < 0.5


def test_extraction_turns_headings_and_definitions_into_questions():
    chunk = _chunk(
        "A per diem is a fixed daily allowance for meals while travelling. "
        "Employees must submit receipts within 30 days of the trip.",
        heading="Expenses > Meals while travelling",
    )
    pairs = extract_pairs(chunk, limit=3, answer_first=0)
    questions = [p.question for p in pairs]
    assert questions[0] == "What does the Expenses policy say about meals while travelling?"
    assert "What is a per diem?" in questions
    assert "What must employees do?" in questions
    assert all(p.teacher.startswith("extract:") and p.chunk_id == "c1" for p in pairs)
    assert all(format_problem(p) is None for p in pairs)


def test_answer_first_pairs_ask_for_a_span_copied_from_the_chunk():
    chunk = _chunk(
        "The mileage rate is 40 cents for every kilometre driven on company business. "
        "Claims must be filed within thirty days of the trip. "
        "The policy was last revised in 2019 by the Finance Committee after a staff survey."
    )
    pairs = answer_first_pairs(chunk)
    by_answer = {p.answer: p for p in pairs}
    assert by_answer["40 cents"].question == (
        "The mileage rate is how much for every kilometre driven on company business?"
    )
    assert by_answer["thirty days"].question == (
        "Claims must be filed within how many days of the trip?"
    )
    assert by_answer["in 2019"].question.startswith("The policy was last revised when by")
    assert "Finance Committee" in by_answer
    for p in pairs:
        assert p.answer in p.sentence and p.sentence in " ".join(chunk.text.split())
        assert p.answer.lower() not in p.question.lower()
        assert p.teacher.startswith("answer-first:") and format_problem(p) is None
    # A span glued to a longer token is not cut out of it.
    glued = answer_first_pairs(_chunk("The old PDP-11 machines ran the payroll until 1990 here."))
    assert [p.answer for p in glued] == ["until 1990"]


def test_answer_first_pairs_read_list_items_and_markup_as_prose():
    chunk = _chunk(
        "- Your deadline should be at least five business days out, preferably longer.\n"
        "- Invite the new hire to **shadow** the weekly planning call with 3 senior engineers.\n"
        "| Plan | Price | Seats |\n| Basic | $10 | 5 |\n"
        "This creates parity between the two processes and the offices they affect."
    )
    by_answer = {p.answer: p for p in answer_first_pairs(chunk)}
    five = by_answer["five business days"]
    assert (
        five.question
        == "Your deadline should be at least how many business days out, preferably longer?"
    )
    assert by_answer["two processes"].question.startswith("This creates parity between how many")
    for p in by_answer.values():
        assert not p.question.startswith(("-", "|")) and "**" not in p.question + p.sentence
        assert "|" not in p.sentence  # a table row is not a sentence
    assert "$10" not in by_answer


def test_heading_questions_unescape_the_title():
    chunk = _chunk(
        "You can change the password you use to log into your laptop by following the guide.",
        title="Logging in &amp; Networks",
        heading="Change your password",
    )
    (pair,) = [p for p in extract_pairs(chunk) if p.teacher == "extract:heading"]
    assert "Logging in & Networks" in pair.question and "&amp;" not in pair.question


def test_filters_count_each_reason_on_a_real_index(refresh_data, embedder):
    s = make_settings(refresh_data)
    reader = open_index(s, embedder=embedder)
    chunks = {c.chunk_id: c for c in iter_chunks(reader, ["handbook"])}
    leave = next(
        c
        for c in chunks.values()
        if "carry" in c.text.lower() and c.title.lower().startswith("annual")
    )
    sentence = (
        next(x for x in leave.text.replace("\n", " ").split(". ") if "carry" in x.lower()).strip()
        + "."
    )
    good = pair_from_chunk(
        leave, "How many days of annual leave can I carry over to next year?", sentence, "test"
    )
    dup = pair_from_chunk(
        leave, "How many annual leave days can I carry over to next year?", sentence, "test"
    )
    unsupported = pair_from_chunk(
        leave,
        "How many days of annual leave can I sell back?",
        "You can sell back 97 days to Quentin.",
        "test",
    )
    malformed = pair_from_chunk(leave, "What is the passage about?", sentence, "test")
    off_topic = pair_from_chunk(
        leave, "How do I reset my laptop password quickly?", sentence, "test"
    )
    kept, stats = filter_pairs(
        [good, dup, unsupported, malformed, off_topic],
        chunks,
        reader=reader,
        embedder=embedder,
        collections=["handbook"],
        min_support=0.7,
        round_trip_k=5,
        dedupe_similarity=0.9,
    )
    assert [p.question for p in kept] == [good.question]
    assert stats.dropped == {"format": 1, "supported": 1, "duplicate": 1, "round_trip": 1}
    assert stats.generated == 5 and stats.kept == 1
    assert kept[0].scores["round_trip_rank"] >= 1 and kept[0].scores["support"] == 1.0
    assert stats.pass_rates()["format"] == pytest.approx(0.8)
    # Earlier runs' questions count as already kept.
    again, stats2 = filter_pairs(
        [good],
        chunks,
        reader=reader,
        embedder=embedder,
        collections=["handbook"],
        min_support=0.7,
        round_trip_k=5,
        dedupe_similarity=0.9,
        existing_questions=[good.question],
        stats=FilterStats(),
    )
    assert again == [] and stats2.dropped["duplicate"] == 1
    reader.close()


class _FakeOpenAI:
    """A tiny /v1/chat/completions server that records what it was sent."""

    def __init__(self, replies):
        self.requests: list[dict] = []
        self.replies = list(replies)
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if not fake.replies:
                    self.send_response(500)
                    self.end_headers()
                    return
                data = json.dumps(
                    {
                        "choices": [
                            {"message": {"role": "assistant", "content": fake.replies.pop(0)}}
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self):
        self.httpd.shutdown()


def test_openai_compatible_teacher_over_http():
    server = _FakeOpenAI(
        ["How many days of leave do staff get?", "Staff get 25 days of annual leave a year [1]."]
    )
    try:
        teacher = OpenAITeacher(server.url, "big-model", api_key="sekrit", timeout=5)
        chunk = _chunk(
            "Staff get 25 days of annual leave a year, plus public holidays.", title="Annual leave"
        )
        pairs = teacher_pairs(chunk, teacher, n=1)
        assert len(pairs) == 1
        p = pairs[0]
        assert p.question == "How many days of leave do staff get?"
        assert p.answer == "Staff get 25 days of annual leave a year."  # citation mark stripped
        assert p.teacher == f"openai:big-model@{server.url}"
        first, second = server.requests
        assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sekrit"
        assert first["body"]["model"] == "big-model" and first["body"]["temperature"] == 0
        assert first["body"]["messages"][-1]["role"] == "user"  # the prefill is not sent as a turn
        # The answer is asked with the serving prompt: the chunk as passage [1].
        assert "[1] Annual leave" in second["body"]["messages"][-1]["content"]
        with pytest.raises(TeacherError):
            teacher.complete(
                [{"role": "user", "content": "x"}], max_tokens=5
            )  # server has no reply left: 500
        teacher.close()
    finally:
        server.stop()


def test_restricted_collection_never_reaches_pairs_or_examples(refresh_data, embedder):
    """The canary lives only in the restricted `hr` collection: with training limited to
    `handbook`, the teacher never sees it, and no pair or RAFT example (gold or distractor)
    contains it, even for questions about its topic."""
    s = make_settings(refresh_data, training={"collections": ["handbook"]})
    reader = open_index(s, embedder=embedder)
    assert set(reader.collections()) == {"handbook", "hr"}
    collections = trainable_collections(s, reader.collections())
    assert collections == ["handbook"]
    chunks = {c.chunk_id: c for c in iter_chunks(reader, collections)}
    assert chunks and all(c.collection == "handbook" for c in chunks.values())

    def scripted(messages):  # echoes the passage's first words, so a leak would show
        return (
            "Question: What does "
            + " ".join(
                messages[-2 if messages[-1]["role"] == "assistant" else -1]["content"].split()[2:8]
            )
            + "?"
        )

    gen = FakeGenerator(scripted)
    teacher = GeneratorTeacher(gen, "fake")
    pairs = []
    for chunk in chunks.values():
        pairs += extract_pairs(chunk) + teacher_pairs(chunk, teacher)
    # Questions aimed at the restricted topic must still only get handbook passages.
    pairs += [
        pair_from_chunk(
            c, "What is the executive salary review code word?", c.text.split(".")[0], "probe"
        )
        for c in list(chunks.values())[:3]
    ]
    examples = build_examples(
        pairs,
        chunks,
        reader,
        collections,
        distractors=3,
        no_gold_share=0.5,
        seed=0,
        context_tokens=600,
        count_tokens=lambda t: len(t.split()),
        min_support=0.7,
    )
    assert examples
    assert all(CANARY not in json.dumps(m) for call in gen.calls for m in call)
    assert all(CANARY not in p.to_json() for p in pairs)
    assert all(CANARY not in json.dumps(e.messages) for e in examples)
    assert all(cid in chunks for e in examples for cid in e.chunk_ids)
    # and the default (no training.collections) follows slack.default_collections
    s2 = make_settings(refresh_data, slack={"default_collections": ["handbook"]})
    assert trainable_collections(s2, reader.collections()) == ["handbook"]
    assert trainable_collections(make_settings(refresh_data), reader.collections()) == [
        "handbook",
        "hr",
    ]
    reader.close()


def test_raft_examples_cite_the_gold_passage_or_say_not_found(refresh_data, embedder):
    s = make_settings(refresh_data)
    reader = open_index(s, embedder=embedder)
    chunks = {c.chunk_id: c for c in iter_chunks(reader, ["handbook"])}
    pairs = [p for c in chunks.values() for p in extract_pairs(c)]
    examples = build_examples(
        pairs,
        chunks,
        reader,
        ["handbook"],
        distractors=2,
        no_gold_share=0.3,
        seed=1,
        context_tokens=600,
        count_tokens=lambda t: len(t.split()),
        min_support=0.7,
    )
    by_id = {p.pair_id: p for p in pairs}
    kinds = {e.kind for e in examples}
    assert kinds == {"gold", "no_gold", "reader"}
    readers = [e for e in examples if e.kind == "reader"]
    for e in readers:  # the reader's own prompt, the short answer copied from its sentence
        pair = by_id[e.pair_id]
        assert e.messages[:-1] == reader_messages(pair.question, pair.sentence)
        assert e.target == pair.answer and e.target in pair.sentence
    examples = [e for e in examples if e.kind != "reader"]
    for e in examples:
        user = e.messages[-2]["content"]
        assert e.messages[0]["role"] == "system" and e.messages[-1]["role"] == "assistant"
        gold = by_id[e.pair_id]
        if e.kind == "gold":
            assert e.target.startswith(gold.answer[:-1]) and f"[{e.gold_n}]" in e.target
            assert e.chunk_ids[e.gold_n - 1] == gold.chunk_id
            assert user.count("\n[") + user.startswith("[") >= 2 or len(e.chunk_ids) >= 2
        else:
            assert e.target == NOT_FOUND and gold.chunk_id not in e.chunk_ids
    share = sum(e.kind == "no_gold" for e in examples) / len(examples)
    assert 0.1 < share < 0.5
    reader.close()
