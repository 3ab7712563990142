"""The shared segmentation: sentence spans and units point back into the source text."""

from __future__ import annotations

from lorebot.text import sentence_spans, split_sentences, units


def test_sentence_spans_cover_each_sentence_of_the_original_text() -> None:
    text = "  Version 2.5 is out.  See v3.\n\n- first item\n- second item\n"
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == [
        "Version 2.5 is out.",
        "See v3.",
        "- first item",
        "- second item",
    ]
    assert split_sentences(text) == [
        "Version 2.5 is out.",
        "See v3.",
        "- first item",
        "- second item",
    ]


def test_a_unit_spans_its_label_and_the_sentence_it_names() -> None:
    text = (
        "Reception\n\nReception is staffed from 8:00 on extension 2100.\n\n"
        "PARKING\n=======\n\nThere are 40 spaces."
    )
    got = units(text)
    assert [u.text for u in got] == [
        "Reception: Reception is staffed from 8:00 on extension 2100.",
        "PARKING: There are 40 spaces.",
    ]
    assert text[got[0].start : got[0].end].startswith("Reception\n\nReception is staffed")
    assert text[got[1].start : got[1].end] == "PARKING\n=======\n\nThere are 40 spaces."


def test_blank_text_has_no_units() -> None:
    assert units("") == [] and units("  \n\n ") == [] and sentence_spans("\n") == []
    assert [u.text for u in units("Just a label")] == ["Just a label"]
