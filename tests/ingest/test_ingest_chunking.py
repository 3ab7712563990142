"""Chunking: sizes in MiniLM tokens, overlap, structure, tables, boilerplate, no empty chunks."""

from __future__ import annotations

import pytest

from ingest.chunking import (
    FOOTER,
    HEADER,
    LIST,
    PAGE_NUMBER,
    TABLE,
    TEXT,
    TITLE,
    Element,
    chunk_elements,
    chunk_table,
    drop_boilerplate,
    split_text,
)
from ingest.tokens import WordPieceCounter
from lorebot.assets import embedding_model_path


@pytest.fixture(scope="module")
def counter() -> WordPieceCounter:
    return WordPieceCounter(embedding_model_path())


def sentences(n: int, topic: str = "leave") -> str:
    return " ".join(
        f"Sentence {i} explains the {topic} rule number {i} in plain words for every employee."
        for i in range(n)
    )


def test_counter_counts_word_pieces_without_special_tokens(counter):
    assert counter.count("") == 0
    assert counter.count("hello") == 1
    # WordPiece splits long rare words; the count follows the model, not whitespace.
    assert counter.count("antidisestablishmentarianism") > 1
    # joining with whitespace adds no tokens: sizes of pieces add up
    a, b = "The leave policy.", "Überraschung naïve café"
    assert counter.count(a + "\n\n" + b) == counter.count(a) + counter.count(b)


@pytest.mark.parametrize("size,overlap", [(200, 32), (64, 16), (32, 0)])
def test_every_chunk_fits_the_token_budget(counter, size, overlap):
    els = [Element(TITLE, "Leave", depth=0), Element(TEXT, sentences(60))]
    chunks = chunk_elements(
        els, counter, title="Handbook", chunk_tokens=size, overlap_tokens=overlap
    )
    assert len(chunks) > 3
    for c in chunks:
        assert 0 < counter.count(c.text) <= size
        assert c.tokens == counter.count(c.text)
        # the embedded text (prefix + text) still fits MiniLM's 256-token window
        assert counter.count(c.embed_text) + 2 <= 256


def test_consecutive_chunks_of_a_section_overlap(counter):
    chunks = chunk_elements(
        [Element(TEXT, sentences(40))], counter, chunk_tokens=64, overlap_tokens=16
    )
    assert len(chunks) >= 3
    for prev, nxt in zip(chunks, chunks[1:]):
        # the next chunk starts with the tail of the previous one
        shared = _longest_suffix_prefix(prev.text, nxt.text)
        assert shared, (prev.text, nxt.text)
        assert 0 < counter.count(shared) <= 16


def _longest_suffix_prefix(a: str, b: str) -> str:
    for n in range(min(len(a), len(b)), 0, -1):
        if a.endswith(b[:n]):
            return b[:n]
    return ""


def test_no_overlap_when_disabled(counter):
    chunks = chunk_elements(
        [Element(TEXT, sentences(30))], counter, chunk_tokens=64, overlap_tokens=0
    )
    joined = " ".join(c.text for c in chunks)
    assert joined.count("Sentence 5 explains") == 1


def test_no_empty_chunks(counter):
    els = [
        Element(TITLE, "Empty section", depth=0),
        Element(TEXT, "   "),
        Element(TEXT, ""),
        Element(TEXT, "\n\n"),
        Element(PAGE_NUMBER, "3"),
        Element(TEXT, "...!!!"),
    ]
    chunks = chunk_elements(els, counter, title="Doc")
    for c in chunks:
        assert c.text.strip()
    assert all("..." not in c.text or "Empty section" in c.text for c in chunks)
    assert chunk_elements([], counter) == []
    assert chunk_elements([Element(TEXT, " \n ")], counter) == []


def test_heading_path_and_prefix(counter):
    long = sentences(8, "travel")
    els = [
        Element(TITLE, "Handbook", depth=0),
        Element(TITLE, "Travel", depth=1),
        Element(TITLE, "Booking", depth=2),
        Element(TEXT, long),
        Element(TITLE, "Expenses", depth=1),
        Element(TEXT, sentences(8, "expense")),
    ]
    chunks = chunk_elements(els, counter, title="Handbook", chunk_tokens=200, overlap_tokens=0)
    headings = [c.heading for c in chunks]
    assert "Travel > Booking" in headings
    assert "Expenses" in headings
    booking = next(c for c in chunks if c.heading == "Travel > Booking")
    # the embedded text names title and heading; the stored text does not
    assert booking.embed_text.startswith("Handbook > Travel > Booking\n")
    assert not booking.text.startswith("Handbook")
    assert booking.text.startswith("Sentence 0 explains the travel")


def test_small_sections_are_merged_with_headings_inline(counter):
    els = [
        Element(TITLE, "Leave", depth=0),
        Element(TITLE, "Sick leave", depth=1),
        Element(TEXT, "Call your manager before 09:00."),
        Element(TITLE, "Parental leave", depth=1),
        Element(TEXT, "Parents get 16 weeks."),
    ]
    chunks = chunk_elements(els, counter, title="HR", chunk_tokens=200, overlap_tokens=0)
    assert len(chunks) == 1
    c = chunks[0]
    assert c.heading == "Leave"
    assert "Sick leave" in c.text and "Parental leave" in c.text
    assert (
        c.text.index("Sick leave")
        < c.text.index("09:00")
        < c.text.index("Parental leave")
        < c.text.index("16 weeks")
    )


def test_titles_without_content_are_kept_as_text(counter):
    # PDF parsers label short lines as titles; their words must not vanish
    els = [
        Element(TITLE, "Fire exits are marked green", depth=0),
        Element(TITLE, "Lifts are out of use", depth=0),
    ]
    chunks = chunk_elements(els, counter, title="Safety")
    text = " ".join(c.text for c in chunks)
    assert "Fire exits are marked green" in text and "Lifts are out of use" in text


def test_table_kept_whole_when_it_fits(counter):
    html = "<table><tr><th>city</th><th>rate</th></tr><tr><td>Lisbon</td><td>61</td></tr></table>"
    els = [Element(TEXT, "Rates below."), Element(TABLE, "city rate Lisbon 61", html=html)]
    chunks = chunk_elements(els, counter, title="Per diem")
    tables = [c for c in chunks if c.kind == TABLE]
    assert len(tables) == 1
    assert tables[0].text == "city | rate\nLisbon | 61"


def test_big_table_split_by_rows_with_header_repeated(counter):
    rows = "".join(
        f"<tr><td>City number {i}</td><td>{i * 7}</td><td>EUR</td></tr>" for i in range(80)
    )
    html = f"<table><tr><th>city</th><th>rate</th><th>currency</th></tr>{rows}</table>"
    pieces = chunk_table(Element(TABLE, "flat", html=html), 64, counter)
    assert len(pieces) > 3
    for p in pieces:
        assert p.startswith("city | rate | currency\n")
        assert counter.count(p) <= 64
    body = [line for p in pieces for line in p.split("\n")[1:]]
    assert len(body) == 80  # every row exactly once
    assert body[0] == "City number 0 | 0 | EUR"


def test_boilerplate_kept_once(counter):
    els = []
    for page in range(1, 5):
        els += [
            Element(HEADER, "ACME Corp internal", page=page),
            Element(TEXT, f"Unique content of page {page} about the travel policy.", page=page),
            Element(
                TEXT,
                "This document is confidential and must not be shared outside ACME.",
                page=page,
            ),
            Element(FOOTER, f"{page}", page=page),
            Element(PAGE_NUMBER, str(page), page=page),
        ]
    els.append(Element(LIST, "Yes"))
    els.append(Element(LIST, "Yes"))
    kept = drop_boilerplate(els)
    texts = [e.text for e in kept]
    assert texts.count("ACME Corp internal") == 1
    assert texts.count("This document is confidential and must not be shared outside ACME.") == 1
    assert sum("Unique content" in t for t in texts) == 4
    assert texts.count("Yes") == 2  # short and only twice: a real answer, not boilerplate
    assert not any(e.kind == PAGE_NUMBER for e in kept)


def test_split_text_handles_text_without_spaces(counter):
    blob = "/".join(f"segment{i}" for i in range(300))  # a minified line, a long URL
    pieces = split_text(blob, 50, counter)
    assert len(pieces) > 1
    assert "".join(p for p, _ in pieces) == blob
    assert all(counter.count(p) <= 50 for p, _ in pieces)


def test_junk_blobs_are_dropped_from_elements():
    from ingest.parse.elements import clean_text

    text = "Logo: " + "QUJD" * 200 + " end of header"
    assert clean_text(text) == "Logo: end of header"


def test_pages_follow_elements(counter):
    els = [Element(TEXT, sentences(12), page=1), Element(TEXT, sentences(12, "expense"), page=2)]
    chunks = chunk_elements(els, counter, chunk_tokens=100, overlap_tokens=0)
    assert chunks[0].page == 1
    assert chunks[-1].page == 2


def test_tail_of_long_text_matches_full_encoding(counter):
    text = sentences(40) + " Überraschung naïve café antidisestablishmentarianism ends here."
    for n in (1, 5, 16, 32):
        tail = counter.tail(text, n)
        assert text.endswith(tail)
        assert 0 < counter.count(tail) <= n
        # the same as encoding the whole text: no shorter word-boundary tail was missed
        enc = counter._encode(text)
        i = counter._word_start(enc, len(enc.ids) - n)
        assert tail == text[enc.offsets[i][0] :]
