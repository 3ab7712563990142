"""Citation formatting for the terminal and the `ask --json` shape."""

from __future__ import annotations

from lorebot import messages
from lorebot.types import Answer, Citation


def _citation(n, **kw):
    base = dict(
        n=n,
        chunk_id=f"c{n}",
        title=f"Doc {n}",
        source=f"docs/doc{n}.md",
        collection="handbook",
        score=0.5,
        text="word " * 80,
    )
    base.update(kw)
    return Citation(**base)


def test_snippet_cuts_on_a_word_boundary():
    c = _citation(1, text="alpha beta gamma delta " * 30)
    snip = c.snippet(50)
    assert snip.endswith("…") and len(snip) <= 51
    assert not snip[:-1].endswith(" ")
    assert _citation(2, text="short  text\n here").snippet() == "short text here"


def test_location_prefers_url_and_adds_page():
    assert _citation(1, url="https://intranet/x", page=3).location() == "https://intranet/x, p. 3"
    assert _citation(1).location() == "docs/doc1.md"


def test_answer_text_numbers_sources_and_marks_uncited():
    a = Answer(
        question_id="q",
        question="?",
        answer="25 days [1].",
        citations=[_citation(1), _citation(2, cited=False)],
        index_version="v1",
        timings_ms={"retrieve": 12.0, "generate": 300.0, "total": 320.0},
    )
    text = messages.answer_text(a).plain
    assert "[1] Doc 1" in text and "[2] Doc 2" in text
    assert "(not cited)" in text.split("[2]")[1]
    assert "index v1" in text and "adapter base" in text and "generate 300 ms" in text


def test_abstained_answer_labels_sources_as_nearest():
    a = Answer(
        question_id="q",
        question="?",
        answer="The documents do not cover this.",
        abstained=True,
        citations=[_citation(1, cited=False)],
    )
    assert "Nearest sources" in messages.answer_text(a).plain


def test_answer_json_shape():
    a = Answer(
        question_id="q",
        question="Q?",
        answer="A",
        citations=[_citation(1, url="https://i/x")],
        adapter="a3",
        timings_ms={"retrieve": 1.23456, "generate": 2.0, "total": 3.0},
    )
    j = messages.answer_json(a)
    assert j["citations"][0]["source"] == "https://i/x"
    assert set(j["citations"][0]) >= {"source", "title", "chunk_id", "score", "text"}
    assert j["timings_ms"]["retrieve"] == 1.2
    assert j["adapter"] == "a3"
    assert j["short_answer"] is None


def test_answer_json_reports_the_short_answer_as_its_own_field():
    a = Answer(question_id="q", question="Q?", answer="27 days [1]", short_answer="27 days")
    assert messages.answer_json(a)["short_answer"] == "27 days"


def _bold(text) -> list[str]:
    """The parts of a rich Text printed in bold."""
    return [text.plain[s.start : s.end] for s in text.spans if "bold" in str(s.style)]


def test_answer_text_prints_a_read_answer_short_answer_first_in_bold_then_the_quote():
    a = Answer(
        question_id="q",
        question="How many days of leave?",
        answer="27 days [1]\n> Staff get 27 days of annual leave. [1]",
        short_answer="27 days",
        citations=[_citation(1)],
    )
    text = messages.answer_text(a)
    assert text.plain.startswith("A: 27 days [1]\n> Staff get 27 days of annual leave. [1]\n")
    assert "27 days [1]" in _bold(text)
    assert not any("Staff get" in part for part in _bold(text))


def test_answer_text_leaves_a_generated_or_abstained_answer_unbolded():
    plain = Answer(question_id="q", question="?", answer="You get 27 days [1].")
    refused = Answer(
        question_id="q", question="?", answer="Not found.", short_answer="x", abstained=True
    )
    for a in (plain, refused):
        text = messages.answer_text(a)
        assert a.answer in text.plain and a.answer not in _bold(text)
