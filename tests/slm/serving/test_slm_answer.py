"""The answer path with a scripted generator and an in-memory retriever.

Most tests switch the evidence quote off to look at the model's sentence alone; the
quote's own tests are at the end and in test_slm_evidence.py.
"""

from __future__ import annotations

import pytest

from lorebot.settings import ModelSettings, RetrievalSettings
from lorebot.types import Answer, Question, Turn
from slm.serving.answer import (
    ABSTAIN_TEXT,
    Retriever,
    answer_question,
    is_follow_up,
    retrieval_query,
)
from slm.serving.generator import Generator
from slm.serving.prompt import NOT_FOUND
from slm.serving.retrievers import StaticRetriever
from tests.support.fakes import FakeGenerator, make_hit, make_hits

RETRIEVAL = RetrievalSettings(top_k=3, candidates=15, context_tokens=300, min_score=0.3)
# These tests check the generating path (the fakes have no score_answers either).
MODEL = ModelSettings(max_tokens=40, answer_mode="generate")


def leave_hits():
    return [
        make_hit(
            "Staff get 25 days of annual leave.", title="Leave", chunk_id="leave", dense_score=0.71
        ),
        make_hit(
            "Expenses are claimed monthly.", title="Expenses", chunk_id="exp", dense_score=0.52
        ),
        make_hit("The VPN uses WireGuard.", title="VPN", chunk_id="vpn", dense_score=0.31),
    ]


def ask(text: str, retriever, generator, **kw) -> Answer:
    return answer_question(
        Question(text=text, **kw),
        retriever,
        generator,
        retrieval=RETRIEVAL,
        model=MODEL,
        quote_evidence=False,
    )


def test_fakes_satisfy_the_protocols() -> None:
    assert isinstance(StaticRetriever([]), Retriever)
    assert isinstance(FakeGenerator([]), Generator)


def test_answers_from_the_passages_with_citations_and_metadata() -> None:
    retriever = StaticRetriever(leave_hits(), version="v7")
    gen = FakeGenerator(["Staff get 25 days of annual leave [1]."], adapter="a3")
    pieces: list[str] = []
    answer = answer_question(
        Question(text="How much annual leave?"),
        retriever,
        gen,
        retrieval=RETRIEVAL,
        model=MODEL,
        quote_evidence=False,
        on_token=pieces.append,
    )
    assert not answer.abstained
    assert answer.answer == "Staff get 25 days of annual leave [1]."
    assert [(c.n, c.chunk_id, c.cited) for c in answer.citations] == [(1, "leave", True)]
    assert answer.index_version == "v7" and answer.adapter == "a3"
    assert "".join(pieces).strip() == answer.answer and len(pieces) > 1
    assert {
        "retrieve",
        "prompt_build",
        "generate",
        "first_token",
        "total",
    } <= answer.timings_ms.keys()
    assert answer.completion_tokens == 8 and answer.prompt_tokens > 0
    # the model saw the three passages, numbered, and the question
    user = gen.calls[0][-1]["content"]
    assert "[1] Leave" in user and "[2] Expenses" in user and "[3] VPN" in user
    assert "How much annual leave?" in user


def test_search_gets_k_candidates_and_the_askers_collections() -> None:
    retriever = StaticRetriever(leave_hits())
    ask(
        "How much annual leave?",
        retriever,
        FakeGenerator(["25 days [1]."]),
        collections=["hr", "it"],
    )
    call = retriever.calls[0]
    assert (call.query, call.k, call.collections, call.candidates) == (
        "How much annual leave?",
        3,
        ["hr", "it"],
        15,
    )


def test_no_hits_abstains_without_calling_the_model() -> None:
    gen = FakeGenerator(["should not be used"])
    answer = ask("What is the wifi password?", StaticRetriever([]), gen)
    assert answer.abstained
    assert answer.answer == ABSTAIN_TEXT
    assert answer.citations == []
    assert gen.calls == []
    assert answer.prompt_tokens == 0


def test_weak_evidence_abstains_without_the_model_and_lists_nearest_sources() -> None:
    hits = make_hits(["a", "b", "c", "d"], dense_scores=[0.29, 0.2, 0.1, 0.05])
    gen = FakeGenerator(["should not be used"])
    answer = ask("Who won the 1998 world cup?", StaticRetriever(hits), gen)
    assert answer.abstained and answer.answer == ABSTAIN_TEXT
    assert gen.calls == []
    assert [c.chunk_id for c in answer.citations] == ["c1", "c2", "c3"]
    assert not any(c.cited for c in answer.citations)


def test_abstention_uses_the_best_dense_score_not_the_fused_rank() -> None:
    # the top fused hit came from keyword search only; a lower one is semantically close
    hits = [
        make_hit("kw only", chunk_id="k", dense_score=None, score=1.0),
        make_hit("close", chunk_id="d", dense_score=0.5),
    ]
    gen = FakeGenerator(["It is close [2]."])
    answer = ask("q about close?", StaticRetriever(hits), gen)
    assert not answer.abstained and len(gen.calls) == 1


def test_score_exactly_at_the_threshold_is_answered() -> None:
    hits = make_hits(["Staff get 25 days."], dense_scores=[RETRIEVAL.min_score])
    answer = ask(
        "How much leave do staff get?", StaticRetriever(hits), FakeGenerator(["25 days [1]."])
    )
    assert not answer.abstained


def test_retriever_without_dense_scores_never_abstains_on_score() -> None:
    hits = make_hits(["Staff get 25 days."], dense_scores=[None])
    answer = ask(
        "How much leave do staff get?", StaticRetriever(hits), FakeGenerator(["25 days [1]."])
    )
    assert not answer.abstained


@pytest.mark.parametrize(
    "reply", [NOT_FOUND, "The passages do not mention the wifi password.", "  "]
)
def test_model_saying_the_documents_do_not_say_abstains(reply: str) -> None:
    gen = FakeGenerator([reply])
    answer = ask("What is the wifi password?", StaticRetriever(leave_hits()), gen)
    assert len(gen.calls) == 1
    assert answer.abstained and answer.answer == ABSTAIN_TEXT
    assert [c.chunk_id for c in answer.citations] == ["leave", "exp", "vpn"]
    assert not any(c.cited for c in answer.citations)


def test_uncited_answer_shows_top_passages_as_uncited_sources() -> None:
    answer = ask("How much leave?", StaticRetriever(leave_hits()), FakeGenerator(["25 days."]))
    assert not answer.abstained
    assert [(c.chunk_id, c.cited) for c in answer.citations] == [("leave", False), ("exp", False)]


def test_citations_never_point_outside_the_passages_the_model_saw() -> None:
    # the budget keeps only the first (long) passage; the model cites [2] and [3] anyway
    hits = make_hits(
        ["Staff get 25 days. " + " ".join(["leave"] * 80), "second passage", "third passage"]
    )
    tight = RetrievalSettings(top_k=3, context_tokens=64, min_score=0.3)
    gen = FakeGenerator(["25 days [1][2][3]."])
    answer = answer_question(
        Question(text="How much leave?"),
        StaticRetriever(hits),
        gen,
        retrieval=tight,
        model=MODEL,
        quote_evidence=False,
    )
    assert "[2]" not in gen.calls[0][-1]["content"]
    assert [c.chunk_id for c in answer.citations] == ["c1"]
    assert answer.answer == "25 days [1]."


def test_max_tokens_from_settings_caps_the_answer() -> None:
    long_reply = " ".join(["word"] * 100)
    answer = answer_question(
        Question(text="How much leave?"),
        StaticRetriever(leave_hits()),
        FakeGenerator([long_reply]),
        retrieval=RETRIEVAL,
        model=ModelSettings(max_tokens=5, answer_mode="generate"),
        quote_evidence=False,
    )
    assert answer.completion_tokens == 5 and len(answer.answer.split()) == 5


def test_answer_survives_a_json_round_trip() -> None:
    answer = ask("How much leave?", StaticRetriever(leave_hits()), FakeGenerator(["25 days [1]."]))
    again = Answer.model_validate(answer.model_dump(mode="json"))
    assert again == answer


def test_follow_up_is_searched_with_the_previous_question_and_history_is_bounded() -> None:
    retriever = StaticRetriever(leave_hits())
    gen = FakeGenerator(["Contractors get 10 days [1]."])
    history = [
        Turn(role="user", text="What is the expense limit?"),
        Turn(role="assistant", text="100 euros [2]."),
        Turn(role="user", text="How much annual leave do staff get?"),
        Turn(role="assistant", text="25 days [1]."),
    ]
    ask("And contractors?", retriever, gen, history=history)
    assert retriever.calls[0].query == "How much annual leave do staff get? And contractors?"
    contents = [m["content"] for m in gen.calls[0]]
    assert "What is the expense limit?" not in " ".join(contents)
    assert contents[1] == "How much annual leave do staff get?"


def test_fresh_question_in_a_thread_is_searched_as_asked() -> None:
    history = [
        Turn(role="user", text="How much annual leave do staff get?"),
        Turn(role="assistant", text="25 days."),
    ]
    q = "How do I connect to the office VPN from home?"
    assert retrieval_query(q, history) == q
    assert retrieval_query("and for contractors?", history).startswith("How much annual leave")
    assert retrieval_query("and for contractors?", []) == "and for contractors?"


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What about contractors?", True),
        ("How long does it take?", True),
        ("Why?", True),
        ("How many days of annual leave do new staff get in their first year", True),
        ("How many days of annual leave do new employees get per year", False),
    ],
)
def test_is_follow_up(question: str, expected: bool) -> None:
    assert is_follow_up(question) is expected


def test_a_failing_token_callback_stops_streaming_but_not_the_answer() -> None:
    calls: list[str] = []

    def boom(piece: str) -> None:
        calls.append(piece)
        raise RuntimeError("slack down")

    answer = answer_question(
        Question(text="How much leave?"),
        StaticRetriever(leave_hits()),
        FakeGenerator(["Staff get 25 days [1]."]),
        retrieval=RETRIEVAL,
        model=MODEL,
        quote_evidence=False,
        on_token=boom,
    )
    assert answer.answer == "Staff get 25 days [1]."
    assert len(calls) == 1


def test_an_answer_naming_a_number_no_passage_has_is_replaced_by_the_abstention() -> None:
    gen = FakeGenerator(["The wifi password is 123456 [1]."])
    answer = ask("What is the wifi password?", StaticRetriever(leave_hits()), gen)
    assert len(gen.calls) == 1
    assert answer.abstained and answer.answer == ABSTAIN_TEXT
    assert not any(c.cited for c in answer.citations)


def test_facts_from_the_thread_count_as_grounded() -> None:
    history = [
        Turn(role="user", text="Is the Zephyr team on the Berlin site?"),
        Turn(role="assistant", text="Yes."),
    ]
    gen = FakeGenerator(["Staff in Berlin get 25 days of annual leave [1]."])
    answer = ask("And their leave?", StaticRetriever(leave_hits()), gen, history=history)
    assert not answer.abstained


def test_grounding_check_can_be_turned_off() -> None:
    answer = answer_question(
        Question(text="What is the wifi password?"),
        StaticRetriever(leave_hits()),
        FakeGenerator(["The wifi password is 123456 [1]."]),
        retrieval=RETRIEVAL,
        model=MODEL,
        quote_evidence=False,
        check_grounding=False,
    )
    assert not answer.abstained and "123456" in answer.answer


def test_streaming_stops_before_an_invented_term_reaches_the_reader() -> None:
    pieces: list[str] = []
    answer = answer_question(
        Question(text="What is the wifi password?"),
        StaticRetriever(leave_hits()),
        FakeGenerator(["The wifi password is 123456 and never changes."]),
        retrieval=RETRIEVAL,
        model=MODEL,
        quote_evidence=False,
        on_token=pieces.append,
    )
    assert answer.abstained
    assert "".join(pieces) == "The wifi password is "


def test_a_half_streamed_name_does_not_stop_streaming() -> None:
    # "Quillfeather" arrives in pieces; "Qu" alone is in no passage but must not stop the stream
    hits = [
        make_hit("Quillfeather staff get 25 days of annual leave.", title="Leave", chunk_id="leave")
    ]

    class Pieces(FakeGenerator):
        def generate(self, messages, *, max_tokens, on_token=None):
            out = super().generate(messages, max_tokens=max_tokens)
            for piece in ["Qu", "ill", "feather", " staff", " get", " 25", " days", " [1]."]:
                on_token(piece)
            return out

    pieces: list[str] = []
    answer = answer_question(
        Question(text="How much leave?"),
        StaticRetriever(hits),
        Pieces(["Quillfeather staff get 25 days [1]."]),
        retrieval=RETRIEVAL,
        model=MODEL,
        quote_evidence=False,
        on_token=pieces.append,
    )
    assert not answer.abstained
    assert "".join(pieces) == "Quillfeather staff get 25 days [1]."


def test_an_answer_that_goes_on_to_invent_is_cut_to_its_supported_part() -> None:
    gen = FakeGenerator(["Staff get 25 days of annual leave [1], with a bonus of 10 days in 2031."])
    answer = ask("How much annual leave?", StaticRetriever(leave_hits()), gen)
    assert not answer.abstained
    assert answer.answer == "Staff get 25 days of annual leave [1]."
    assert [(c.chunk_id, c.cited) for c in answer.citations] == [("leave", True)]


# ----------------------------------------------------------------------------- evidence quote
def quote_ask(text: str, reply: str):
    return answer_question(
        Question(text=text),
        StaticRetriever(leave_hits()),
        FakeGenerator([reply]),
        retrieval=RETRIEVAL,
        model=MODEL,
    )


def test_a_useful_model_sentence_comes_with_the_quoted_evidence() -> None:
    answer = quote_ask(
        "How many days of annual leave do staff get?", "You get 25 days of leave [1]."
    )
    assert (
        answer.answer == "You get 25 days of leave [1].\n> Staff get 25 days of annual leave. [1]"
    )
    assert [c.n for c in answer.citations if c.cited] == [1]
    assert "evidence" in answer.timings_ms


def test_an_empty_model_sentence_leaves_the_quote_alone() -> None:
    answer = quote_ask(
        "How many days of annual leave do staff get?", "The answer to this question is."
    )
    assert answer.answer == "> Staff get 25 days of annual leave. [1]"
    assert not answer.abstained


def test_a_model_sentence_contradicting_the_quote_is_dropped() -> None:
    # 30 is in no passage: without the quote this would abstain; with it, the quote answers.
    answer = quote_ask(
        "How many days of annual leave do staff get?", "Staff get 30 days of leave [1]."
    )
    assert answer.answer == "> Staff get 25 days of annual leave. [1]"


def test_the_model_saying_not_found_still_abstains_with_a_quote_available() -> None:
    answer = quote_ask("How many days of annual leave do staff get?", NOT_FOUND)
    assert answer.abstained and answer.answer == ABSTAIN_TEXT


# ----------------------------------------------------------------------------- neighbours
class NeighbourRetriever(StaticRetriever):
    """The hits, plus each hit's neighbouring chunks in its document (the index's API)."""

    def __init__(self, hits, around):
        super().__init__(hits)
        self.around = around  # chunk_id -> the chunks next to it
        self.asked: list[tuple[str, int, int]] = []

    def neighbours(self, hit, before=1, after=1):
        self.asked.append((hit.chunk.chunk_id, before, after))
        return self.around.get(hit.chunk.chunk_id, [])


def laptop_retriever():
    top = make_hit(
        "Incidents include a stolen laptop and a phishing email.",
        title="Security",
        chunk_id="incidents",
        dense_score=0.6,
    )
    other = make_hit("Expenses are claimed monthly.", title="Expenses", chunk_id="exp")
    hotline = make_hit(
        "If your laptop is stolen, contact the security hotline on extension 4999.",
        title="Security",
        chunk_id="how-to-report",
        dense_score=None,
    )
    return NeighbourRetriever([top, other], {"incidents": [hotline]})


@pytest.mark.parametrize("neighbours", [0, 1])
def test_the_quote_may_come_from_the_top_passages_neighbour_and_cites_it(neighbours) -> None:
    retriever = laptop_retriever()
    answer = answer_question(
        Question(text="Who do I contact if my laptop is stolen?"),
        retriever,
        FakeGenerator(["The answer to this question is."]),
        retrieval=RETRIEVAL.model_copy(update={"neighbours": neighbours}),
        model=MODEL,
    )
    cited = [(c.n, c.chunk_id) for c in answer.citations if c.cited]
    if neighbours:
        assert retriever.asked == [("incidents", 1, 1)]  # the top hit's only
        assert "extension 4999" in answer.answer and answer.answer.endswith("[3]")
        assert cited == [(3, "how-to-report")]  # numbered after the prompt's passages
    else:
        assert retriever.asked == [] and "4999" not in answer.answer
        assert cited == [(1, "incidents")]


def test_a_neighbour_that_is_a_hit_already_is_not_read_twice() -> None:
    retriever = laptop_retriever()
    retriever.around["incidents"] = [retriever.hits[1]]  # "exp" is a hit and a neighbour
    answer = answer_question(
        Question(text="Who do I contact if my laptop is stolen?"),
        retriever,
        FakeGenerator(["The answer to this question is."]),
        retrieval=RETRIEVAL,
        model=MODEL,
    )
    assert [c.chunk_id for c in answer.citations if c.cited] == ["incidents"]


def test_read_mode_reads_the_neighbour_too_and_cites_it() -> None:
    class Scorer:
        adapter = None

        def score_answers(self, messages, answers):
            return [0.0] * len(answers)

        def count_tokens(self, text):
            return len(text.split())

    answer = answer_question(
        Question(text="Who do I contact if my laptop is stolen?"),
        laptop_retriever(),
        Scorer(),  # type: ignore[arg-type]
        retrieval=RETRIEVAL.model_copy(update={"neighbours": 1, "min_confidence": 0.0}),
        model=ModelSettings(answer_mode="read"),
    )
    assert "> If your laptop is stolen, contact the security hotline on extension 4999. [3]" in (
        answer.answer
    )
    assert [(c.n, c.chunk_id) for c in answer.citations if c.cited] == [(3, "how-to-report")]
