"""Block Kit rendering: Slack's limits, escaping, and what the final message must show."""

from __future__ import annotations

import re

import pytest

from bot import render
from lorebot.types import Answer, Citation


def cite(n: int, **kw) -> Citation:
    values = dict(
        n=n,
        chunk_id=f"c{n}",
        title=f"Doc {n}",
        source=f"policies/doc{n}.md",
        collection="handbook",
        score=0.8,
        text="Full-time employees receive 27 days of paid annual leave per year. " * 5,
    )
    values.update(kw)
    return Citation(**values)


def answer(text: str, citations=None, **kw) -> Answer:
    return Answer(
        question_id="q123",
        question="How much leave?",
        answer=text,
        citations=citations if citations is not None else [cite(1)],
        index_version="v7",
        adapter="a3",
        **kw,
    )


def sections(msg) -> list[str]:
    return [b["text"]["text"] for b in msg["blocks"] if b["type"] == "section"]


def all_text(msg) -> str:
    out = []
    for b in msg["blocks"]:
        if b["type"] == "section":
            out.append(b["text"]["text"])
        elif b["type"] == "context":
            out.extend(e["text"] for e in b["elements"])
    return "\n".join(out)


# ----------------------------------------------------------------------------- splitting
@pytest.mark.parametrize("limit", [50, 300, 3000])
def test_split_text_respects_the_limit_and_loses_no_words(limit):
    text = " ".join(f"word{i}." + ("\n\n" if i % 37 == 0 else "") for i in range(3000))
    pieces = render.split_text(text, limit)
    assert all(0 < len(p) <= limit for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_split_text_cuts_an_endless_word_and_never_an_escape():
    text = render.escape("&" * 5000)  # 25,000 chars of &amp;
    pieces = render.split_text(text, 2998)  # not a multiple of len("&amp;")
    assert all(len(p) <= 2998 for p in pieces)
    assert all(re.fullmatch(r"(&amp;)+", p) for p in pieces)
    assert "".join(pieces) == text


def test_long_answer_is_split_into_sections_within_limits():
    text = "\n\n".join(
        f"Paragraph {i}: " + "leave policy details " * 40 for i in range(20)
    )  # ~17k chars
    msg = render.answer_message(answer(text))
    body = [s for s in sections(msg) if not s.startswith(("*Sources*", "*[1]*"))]
    assert len(body) >= 6
    assert all(len(s) <= render.SECTION_LIMIT for s in sections(msg))
    assert " ".join(body).split() == text.split()
    assert len(msg["blocks"]) <= render.MAX_BLOCKS
    assert len(msg["text"]) <= render.FALLBACK_LIMIT


def test_enormous_answer_is_cut_visibly_and_keeps_sources_and_buttons():
    text = "word " * 60_000  # 300k chars, more than 50 sections
    msg = render.answer_message(answer(text, citations=[cite(i) for i in range(1, 5)]))
    assert len(msg["blocks"]) == render.MAX_BLOCKS
    assert all(len(s) <= render.SECTION_LIMIT for s in sections(msg))
    assert any("was cut here" in s for s in sections(msg))
    assert msg["blocks"][-1]["type"] == "actions"
    assert sum(s.startswith("*[") for s in sections(msg)) == 4


# ----------------------------------------------------------------------------- content
def test_final_message_has_answer_sources_context_and_feedback_buttons():
    a = answer(
        "You get *27 days* [1].",
        citations=[
            cite(
                1,
                url="https://intranet.example/leave",
                heading="Annual Leave > Entitlement",
                page=2,
            ),
            cite(2, cited=False),
        ],
        timings_ms={"total": 2345.0},
    )
    msg = render.answer_message(a)
    secs = sections(msg)
    assert secs[0] == "You get *27 days* [1]."
    assert "*Sources*" in secs
    assert secs[secs.index("*Sources*") + 1].startswith(
        "*[1]* <https://intranet.example/leave|Doc 1> · Annual Leave &gt; Entitlement · p. 2"
    )
    assert "`policies/doc2.md`" in secs[secs.index("*Sources*") + 2]
    assert ">Full-time employees receive 27 days" in secs[secs.index("*Sources*") + 1]
    context = [b for b in msg["blocks"] if b["type"] == "context"][0]["elements"][0]["text"]
    assert (
        "index `v7`" in context
        and "adapter `a3`" in context
        and "2.3 s" in context
        and "q123" in context
    )
    buttons = msg["blocks"][-1]["elements"]
    assert [b["action_id"] for b in buttons] == ["feedback_up", "feedback_down"]
    assert all(b["value"] == "q123" for b in buttons)
    assert msg["text"] == "You get *27 days* [1]."


def test_latency_from_the_event_wins_over_worker_timings():
    msg = render.answer_message(answer("ok", timings_ms={"total": 100.0}), latency_s=4.56)
    assert "4.6 s" in all_text(msg)


def test_abstained_answer_labels_sources_as_nearest():
    msg = render.answer_message(answer("I could not find this in the documents.", abstained=True))
    assert "*Nearest sources* (not an answer)" in sections(msg)


def test_model_output_cannot_ping_or_forge_links():
    msg = render.answer_message(answer("<!channel> click <https://evil.example|here> & win"))
    first = sections(msg)[0]
    assert "<!channel>" not in first and "<https://" not in first
    assert first == "&lt;!channel&gt; click &lt;https://evil.example|here&gt; &amp; win"


def test_citation_with_unsafe_url_falls_back_to_the_path():
    c = cite(1, url="javascript:alert(1)", title="Bad <b>")
    text = render.citation_text(c)
    assert "<javascript" not in text and "Bad &lt;b&gt;" in text and "`policies/doc1.md`" in text


def test_error_message_shows_reason_and_reference():
    msg = render.error_message("no index has been built yet (fix: run lorebot ingest)", "ref42")
    text = all_text(msg)
    assert "Sorry, I couldn't answer this" in text
    assert "no index has been built yet" in text and "`ref42`" in text
    assert "ref42" in msg["text"]


def test_placeholder_variants():
    assert render.placeholder(None)["text"] == "Searching…"
    assert render.placeholder(1)["text"] == "Searching 1 document…"
    p = render.placeholder(1234, queue_position=4, truncated=(2000, 40000))
    assert p["text"].startswith("Searching 1,234 documents…")
    assert "number 4 in the queue" in p["text"] and "40,000" in p["text"]


def test_streaming_message_stays_within_limits():
    msg = render.streaming("token " * 40_000)
    assert len(msg["blocks"]) <= render.MAX_BLOCKS
    assert all(len(s) <= render.SECTION_LIMIT for s in sections(msg))
    assert msg["blocks"][-1]["type"] == "context"


def test_status_text_handles_any_index_stats_shape():
    text = render.status_text(
        worker_status={
            "index": {
                "version": "v9",
                "documents": 12,
                "chunks": 340,
                "collections": {"handbook": {"documents": 12, "chunks": 340}},
            },
            "adapter": None,
            "worker": "w1",
        },
        queue_depths={"answer": 0, "ingest": 1, "train": 0},
        live_workers=["lorebot-answer@w1"],
        last_refresh={"status": "promoted", "adapter": "a4"},
    )
    assert "index version `v9`" in text and "documents 12" in text and "`handbook`" in text
    assert "adapter `base`" in text and "ingest 1" in text and "lorebot-answer@w1" in text
    assert "promoted" in text


HOSTILE = "<!channel> click <https://evil.example|here> & win"


@pytest.mark.parametrize(
    "build",
    [
        lambda t: render.answer_message(answer(t)),
        lambda t: render.streaming(t),
        lambda t: render.error_message(t, "ref1"),
    ],
    ids=["answer", "streaming", "error"],
)
def test_fallback_text_is_escaped_like_the_blocks(build):
    """The top-level text (notifications, screen readers) cannot ping or forge links either."""
    msg = build(HOSTILE)
    assert "<!channel>" not in msg["text"] and "<https://" not in msg["text"]
    assert "&lt;!channel&gt; click &lt;https://evil.example|here&gt; &amp; win" in msg["text"]
    assert "&lt;!channel&gt;" in all_text(msg)


def test_escaped_fallback_is_cut_within_the_limit_and_never_mid_entity():
    msg = render.answer_message(answer("x" * (render.FALLBACK_LIMIT - 3) + "<<<<"))
    text = msg["text"]
    assert len(text) <= render.FALLBACK_LIMIT
    assert "<" not in text and not re.search(r"&[a-z]{0,3}…$", text)


QUOTE = "Full-time employees receive 27 days of paid annual leave per year."


def test_a_read_answer_shows_its_short_answer_first_in_bold_then_the_cited_quote():
    a = answer(f"27 days [1]\n> {QUOTE} [1]", short_answer="27 days")
    msg = render.answer_message(a)
    first, quote = sections(msg)[0].split("\n")
    assert first == "*27 days* [1]"
    # Escaped as model text always is; Slack shows a line starting "&gt; " as a quote.
    assert quote == f"&gt; {QUOTE} [1]"
    # Notifications and screen readers get the short answer first too, without the bold.
    assert msg["text"].startswith("27 days [1]\n&gt; ")


@pytest.mark.parametrize(
    "text, short, abstained",
    [
        ("Yes [1]\n> Contractors may use the gym. [1]", "Yes", False),
        (f"> {QUOTE} [1]", QUOTE, False),  # no shorter phrase: the quote alone, as a quote
        ("2*3 rule [1]\n> The 2*3 rule applies. [1]", "2*3 rule", False),  # * would break bold
        ("I could not find this in the documents I can search.", "27 days", True),
        ("You get 27 days [1].", None, False),  # a generated sentence is shown as written
    ],
    ids=["yes-no", "quote-only", "asterisk", "abstained", "generate"],
)
def test_only_a_short_answer_that_leads_the_text_is_made_bold(text, short, abstained):
    msg = render.answer_message(answer(text, short_answer=short, abstained=abstained))
    first = sections(msg)[0].split("\n")[0]
    if text.startswith("Yes"):
        assert first == "*Yes* [1]"
    else:
        assert first == render.escape(text.split("\n")[0])
