"""PDF lines that continue a sentence are joined (ingest.parse.join_wrapped_lines)."""

from __future__ import annotations

from ingest.chunking import LIST, TEXT, TITLE, Element
from ingest.parse.elements import join_wrapped_lines
from ingest.parse.partition import partition_file
from lorebot import assets


def test_a_lower_case_line_after_an_unfinished_one_joins_it() -> None:
    got = join_wrapped_lines(
        [
            Element(TITLE, "Ordering equipment", page=1),
            Element(LIST, "3. Non-standard items need your manager's", page=1),
            Element(
                TEXT,
                "approval and a short justification. Items for health reasons are always approved",
                page=1,
            ),
            Element(
                TITLE, "with a note from occupational health.", page=1
            ),  # a continuation taken for a title
            Element(TITLE, "How long devices last", page=1),
            Element(TEXT, "Laptops are replaced every 48 months.", page=1),
        ]
    )
    assert [(e.kind, e.text) for e in got] == [
        (TITLE, "Ordering equipment"),
        (
            LIST,
            "3. Non-standard items need your manager's approval and a short justification. "
            "Items for health reasons are always approved with a note from occupational health.",
        ),
        (TITLE, "How long devices last"),
        (TEXT, "Laptops are replaced every 48 months."),
    ]


def test_finished_sentences_capitals_titles_and_page_breaks_stay_apart() -> None:
    els = [
        Element(TEXT, "The office opens at 7:00.", page=1),
        Element(TEXT, "lower case after a full stop stays apart", page=1),
        Element(TEXT, "An unfinished line", page=1),
        Element(TEXT, "Capitalised next line stays apart", page=1),
        Element(TITLE, "A heading without a full stop", page=1),
        Element(TEXT, "lower case after a heading stays apart", page=1),
        Element(TEXT, "Last line of page one", page=1),
        Element(TEXT, "first line of page two", page=2),
    ]
    assert join_wrapped_lines(els) == els


def test_the_sample_pdf_has_no_heading_made_of_half_a_sentence() -> None:
    elements, _ = partition_file(assets.sample_docs_dir() / "equipment_and_laptops.pdf", "pdf")
    titles = [e.text for e in elements if e.kind == TITLE]
    assert "with a note from occupational health." not in titles
    assert any(
        e.text.startswith(
            "Laptops are replaced every 48 months. IT contacts you about a replacement about a month"  # noqa: E501
        )
        for e in elements
    )
