"""The reader's sentence re-ranking: features that say whether a sentence could answer."""

from __future__ import annotations

import pytest

from lorebot.types import SearchHit
from slm.serving import sentence_rank as sr
from slm.serving.evidence import Evidence
from slm.serving.reader import reading_passages
from tests.support.fakes import make_hits

QUESTION = "Who do I contact if my laptop is stolen?"
INCIDENTS = "A lost or stolen laptop, badge or security key."
HOTLINE = "Call the security hotline on extension 4999."
INTRO = "How to report: Report within one hour of noticing the problem:"


@pytest.mark.parametrize(
    ("question", "kinds"),
    [
        (QUESTION, {"contact"}),
        ("When was the treaty signed?", {"date"}),
        ("how long do i have to pick my health insurance?", {"duration"}),
        ("How many days of annual leave do I get?", {"number"}),
        ("Where is the Calibration Lab?", {"place"}),
        ("Can contractors get the bonus?", set()),
    ],
)
def test_the_kind_a_question_asks_for(question: str, kinds: set[str]) -> None:
    assert sr.asked_kinds(question) == kinds


def test_answer_type_needs_a_thing_the_question_does_not_already_name() -> None:
    assert sr.answer_type(QUESTION, HOTLINE) == 1.0
    assert sr.answer_type(QUESTION, INCIDENTS) == -1.0
    # "1347" is a year the question names itself: it answers nothing
    assert sr.answer_type("How many died in 1347?", "The plague reached Europe in 1347.") == -1.0
    assert sr.answer_type("When did the plague reach Marseille?", "It arrived in 1347.") == 1.0
    assert sr.answer_type("Who founded the company?", "It was founded by Ada Byron.") == 1.0
    assert sr.answer_type("Can I work from home?", HOTLINE) == 0.0


def test_sentences_that_only_introduce_a_list_are_marked() -> None:
    assert sr.introduces(INTRO)
    assert sr.introduces("To request access, follow all of the steps below.")
    assert not sr.introduces(HOTLINE)


def test_rare_shared_words_count_more_than_words_every_sentence_has() -> None:
    cands = [
        sr.Candidate("The laptop policy covers every laptop.", 0.5),
        sr.Candidate("A stolen laptop is an incident.", 0.5),
        sr.Candidate("Laptops are refreshed every three years.", 0.5),
    ]
    rows = sr.features("What if my laptop is stolen?", cands)
    rare = rows[:, sr.FEATURES.index("rare")]
    assert rare[1] > rare[0]  # "stolen" is in one sentence, "laptop" in two


def test_rerank_moves_the_answering_sentence_above_the_topical_one() -> None:
    ranked = [
        Evidence(passage=1, text=INCIDENTS, score=0.9, cosine=0.62),
        Evidence(passage=1, text=INTRO, score=0.7, cosine=0.40),
        Evidence(passage=5, text=HOTLINE, score=0.6, cosine=0.45),
    ]
    weights = {"cosine": 1.0, "lexical": 0.5, "answer_type": 0.4, "intro": -0.3}
    plain = sr.rerank(QUESTION, ranked, lambda n: (1, n > 4), {"cosine": 1.0, "lexical": 0.5})
    typed = sr.rerank(QUESTION, ranked, lambda n: (1, n > 4), weights)
    assert plain[0].text == INCIDENTS
    assert typed[0].text == HOTLINE and typed[0].passage == 5
    assert typed[-1].text == INTRO
    # the score the reader's abstention reads is the re-ranking's
    assert typed[0].score == pytest.approx(0.45 + 0.4)


def test_reading_passages_add_the_neighbours_of_the_top_hit_or_of_every_hit() -> None:
    hits = make_hits(["first", "second"])
    extra = {h.chunk.chunk_id: make_hits([f"next to {h.chunk.text}"])[0] for h in hits}
    for h in hits:  # distinct ids for the neighbours, each in its hit's document
        extra[h.chunk.chunk_id].chunk.chunk_id = f"n-{h.chunk.chunk_id}"
        extra[h.chunk.chunk_id].chunk.source = h.chunk.source

    def neighbours(hit: SearchHit, before: int, after: int) -> list[SearchHit]:
        return [extra[hit.chunk.chunk_id], hits[0]]  # a hit again: not repeated

    top, top_origin = reading_passages(hits, neighbours, 1, of="top")
    every, every_origin = reading_passages(hits, neighbours, 1, of="all")
    assert [p.chunk.text for p in top] == ["first", "second", "next to first"]
    # (rank of the hit, a neighbour?, of the top hit's document?)
    assert top_origin == [(1, False, True), (2, False, False), (1, True, True)]
    assert [p.chunk.text for p in every][3:] == ["next to second"]
    assert every_origin[3] == (2, True, False)
    assert reading_passages(hits, None, 1)[0] == hits


def test_another_document_must_win_by_the_top_document_margin() -> None:
    elsewhere = "Expenses are filed in the travel portal within 30 days."
    on_top_page = "File your expenses within 30 days of the trip."
    origin = {1: (1, False, True), 2: (2, False, False)}.get

    def ranked(cosine_elsewhere: float) -> list[Evidence]:
        return [
            Evidence(passage=2, text=elsewhere, score=0.9, cosine=cosine_elsewhere),
            Evidence(passage=1, text=on_top_page, score=0.8, cosine=0.55),
        ]

    weights = {"cosine": 1.0, "top_doc": 0.1}
    close = sr.rerank("When do I file expenses?", ranked(0.6), origin, weights)
    assert close[0].passage == 1  # 0.05 better elsewhere is within the margin
    # the margin orders documents; the score abstention reads leaves it out
    assert close[0].score == pytest.approx(0.55)
    clear = sr.rerank("When do I file expenses?", ranked(0.7), origin, weights)
    assert clear[0].passage == 2 and clear[0].score == pytest.approx(0.7)
    # without the document in the origin (older callers) nothing is preferred
    plain = sr.rerank("When do I file expenses?", ranked(0.6), lambda n: (n, False), weights)
    assert plain[0].passage == 2
