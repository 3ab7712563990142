"""The reader: short answers are phrases of a passage sentence (or yes/no), chosen by score."""

from __future__ import annotations

from slm.serving import spans
from slm.serving.evidence import Evidence
from slm.serving.reader import read


class ScriptedScorer:
    """Scores answers by a table (unknown answers score low) and records each call."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def score_answers(self, messages, answers):
        self.calls.append(list(answers))
        return [self.table.get(a, -9.0) for a in answers]


SENTENCE = "Staff get 27 days of annual leave each year, plus public holidays."


def test_candidates_are_phrases_of_the_sentence_and_avoid_the_question_words() -> None:
    found = spans.candidates("How many days of annual leave do I get?", SENTENCE)
    assert found and all(c.text in SENTENCE for c in found)
    assert found[0].kind == "number"  # a "how many" question prefers numbers first
    assert all(not c.text.lower().startswith(("of ", "and ")) for c in found)


def test_the_scored_phrase_wins_and_is_copied_from_the_sentence() -> None:
    scorer = ScriptedScorer({"27 days": -0.2})
    reading = read(
        "How many days of annual leave do I get?",
        [Evidence(passage=2, text=SENTENCE, score=0.8)],
        scorer,
    )
    assert reading is not None and reading.short == "27 days"
    assert reading.evidence.passage == 2 and reading.short in reading.evidence.text
    assert "27 days" in scorer.calls[0]


def test_yes_no_questions_choose_between_yes_and_no() -> None:
    scorer = ScriptedScorer({"Yes": -1.0, "No": -1.1})
    negated = Evidence(passage=1, text="Contractors are not eligible for the bonus.", score=0.7)
    reading = read("Can contractors get the bonus?", [negated], scorer)
    assert scorer.calls == [["Yes", "No"]]
    assert reading is not None and reading.short == "No"  # the negation outweighs the model


def test_no_sentence_no_reading() -> None:
    assert read("Anything?", [], ScriptedScorer({})) is None


def test_read_mode_answers_with_the_short_answer_first_then_the_cited_quote() -> None:
    from lorebot.settings import ModelSettings, RetrievalSettings
    from lorebot.types import Question
    from slm.serving.answer import answer_question
    from slm.serving.retrievers import StaticRetriever
    from tests.support.fakes import make_hits

    class Scorer(ScriptedScorer):
        adapter = None

    retriever = StaticRetriever(make_hits([SENTENCE, "The office opens at 8:00."]))
    answer = answer_question(
        Question(question_id="q1", text="How many days of annual leave do I get?"),
        retriever,
        Scorer({"27 days": -0.1}),  # type: ignore[arg-type]
        retrieval=RetrievalSettings(min_score=0.0),
        model=ModelSettings(answer_mode="read"),
    )
    assert not answer.abstained and answer.short_answer == "27 days"
    assert answer.answer.startswith("27 days [1]") and f"> {SENTENCE} [1]" in answer.answer
    assert [c.n for c in answer.citations if c.cited] == [1]


def test_the_better_matching_sentence_wins_over_a_phrase_the_model_prefers_slightly() -> None:
    # The 135M model judges which phrase of a sentence answers well, which sentence answers
    # badly: its score must not move the answer to a sentence that matches the question less.
    right = Evidence(passage=1, text="The hotline for stolen laptops is extension 4410.", score=0.8)
    weaker = Evidence(passage=2, text="Incidents include theft, loss and phishing.", score=0.55)
    scorer = ScriptedScorer({"extension 4410": -1.0, "phishing": -0.8})
    reading = read("Who do I call when my laptop is stolen?", [right, weaker], scorer)
    assert reading is not None and reading.short == "extension 4410"
    assert reading.evidence is right


def test_confidence_follows_the_chosen_sentence_match() -> None:
    scorer = ScriptedScorer({"27 days": -0.5})
    strong = read("How many days of leave?", [Evidence(1, SENTENCE, 0.9)], scorer)
    weak = read("How many days of leave?", [Evidence(1, SENTENCE, 0.3)], scorer)
    assert strong is not None and weak is not None
    assert strong.confidence > weak.confidence


def test_read_mode_hands_the_whole_answer_to_the_stream_at_once() -> None:
    from lorebot.settings import ModelSettings, RetrievalSettings
    from lorebot.types import Question
    from slm.serving.answer import answer_question
    from slm.serving.retrievers import StaticRetriever
    from tests.support.fakes import make_hits

    class Scorer(ScriptedScorer):
        adapter = None

    pieces: list[str] = []
    answer = answer_question(
        Question(question_id="q2", text="How many days of annual leave do I get?"),
        StaticRetriever(make_hits([SENTENCE])),
        Scorer({"27 days": -0.1}),  # type: ignore[arg-type]
        retrieval=RetrievalSettings(min_score=0.0),
        model=ModelSettings(answer_mode="read"),
        on_token=pieces.append,
    )
    assert pieces == [answer.answer] and answer.timings_ms["first_token"] > 0


def test_a_contact_question_prefers_the_number_or_name_to_call() -> None:
    question = "Who do I contact if my laptop is stolen?"
    found = spans.candidates(question, "Call the security hotline on extension 4999.")
    assert spans.asks_for(question)[0] == "contact"
    assert found[0].text in ("4999", "extension 4999") and found[0].kind == "number"
    # a sentence's own first word is capitalised, which does not make it a name
    assert all(c.kind != "name" for c in found if c.text.startswith("Call"))
