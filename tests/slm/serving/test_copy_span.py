"""The copy candidates: the model generates the short answer, held to a span of a sentence."""

from __future__ import annotations

import os

import pytest

from slm.serving import copy_span
from slm.serving.evidence import Evidence

LEAVE = "Staff get 27 days of annual leave each year, plus public holidays."
PARKING = "The car park behind the office opens at 7am on weekdays."
QUESTION = "How many days of annual leave do staff get?"


def test_word_spans_are_runs_of_the_sentence_up_to_the_limit() -> None:
    found = copy_span.word_spans(LEAVE, max_words=3)
    assert "27 days" in found and "27 days of" in found
    assert "holidays" in found  # the sentence's full stop is left off the last word
    assert "year" in found and "year," not in found
    assert all(len(s.split()) <= 3 for s in found)
    assert all(s in LEAVE for s in found)


def test_a_span_in_two_sentences_belongs_to_the_better_ranked_one() -> None:
    found = copy_span.spans_of(QUESTION, [PARKING, "The office opens at 9am."], "words")
    by_text = {s.text: s.sentence for s in found}
    assert by_text["opens at"] == 0 and by_text["9am"] == 1


def test_grammar_shares_prefixes_and_escapes_quotes() -> None:
    spans = copy_span.spans_of("q", ['He said "stop" twice'], "words", max_words=2)
    grammar = copy_span.gbnf(spans)
    assert grammar.startswith("root ::= ")
    assert grammar.count('"He"') == 1  # "He" and "He said" share their first word
    assert '"said \\"stop"' in grammar or '" \\"stop"' in grammar
    with pytest.raises(ValueError):
        copy_span.gbnf([])


class ScriptedScorer:
    """Scores answers by a table; the copy reader must not decode with it."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def score_answers(self, messages, answers):
        return [self.table.get(a, -9.0) for a in answers]


def test_yes_no_questions_are_read_as_today_not_copied() -> None:
    negated = Evidence(passage=1, text="Contractors are not eligible for the bonus.", score=0.7)
    reading = copy_span.read_copy(
        "Can contractors get the bonus?", [negated], ScriptedScorer({"Yes": -1.0, "No": -1.1})
    )
    assert reading is not None and reading.short == "No"


def test_bad_options_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown copy method"):
        copy_span.read_copy(QUESTION, [], ScriptedScorer({}), method="beam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        copy_span.read_copy(QUESTION, [], ScriptedScorer({}), sentences_read=0)
    assert copy_span.read_copy(QUESTION, [], ScriptedScorer({})) is None


@pytest.fixture(scope="module")
def generator():
    from lorebot.assets import answer_model_path
    from slm.serving.generator import LlamaGenerator

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    gen = LlamaGenerator(answer_model_path(), n_threads=1, n_ctx=2048)
    gen.load()
    yield gen
    gen.close()


@pytest.mark.parametrize("method", ["grammar", "trie"])
def test_the_real_model_can_only_copy_and_cites_the_sentence_it_copied(generator, method) -> None:
    # The 135M model, left to itself, tends to echo a sentence from its first word (the
    # bench's finding), so what is asserted is the constraint, not the model's judgement.
    for order in ([PARKING, LEAVE], [LEAVE, PARKING]):
        ranked = [Evidence(passage=n, text=t, score=1 - n / 10) for n, t in enumerate(order, 1)]
        both = copy_span.read_copy(QUESTION, ranked, generator, method=method, sentences_read=2)
        assert both is not None
        allowed = {s.text for s in copy_span.spans_of(QUESTION, order, "words")}
        assert both.short in allowed  # a copy of at most 8 words, whatever the model prefers
        assert both.short in both.evidence.text  # cited from the sentence it was copied from
        # held to the first sentence only, it can only copy from that one
        first = copy_span.read_copy(QUESTION, ranked, generator, method=method, sentences_read=1)
        assert first is not None and first.evidence.passage == 1 and first.short in order[0]
        assert len(first.short.split()) <= copy_span.MAX_WORDS


def test_the_trie_decoding_leaves_the_model_usable_for_scoring(generator) -> None:
    ranked = [Evidence(passage=1, text=LEAVE, score=0.8)]
    from slm.serving.prompt import reader_messages

    before = generator.score_answers(reader_messages(QUESTION, LEAVE), ["27 days"])
    copy_span.read_copy(QUESTION, ranked, generator, method="trie", sentences_read=1)
    copy_span.read_copy(QUESTION, ranked, generator, method="grammar", sentences_read=1)
    after = generator.score_answers(reader_messages(QUESTION, LEAVE), ["27 days"])
    assert after == pytest.approx(before, abs=1e-4)
