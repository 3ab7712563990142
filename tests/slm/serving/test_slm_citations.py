"""Citation parsing and the sources shown under an answer."""

from __future__ import annotations

import pytest

from slm.serving.citations import parse_citations, select_citations
from tests.support.fakes import make_hits


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("Staff get 25 days [1].", 3, [1]),
        ("It is 25 days [1, 2].", 3, [1, 2]),
        ("It is 25 days [2][1].", 3, [2, 1]),
        ("See [1] and later [3], again [1].", 3, [1, 3]),
        ("Covered by [1-3].", 4, [1, 2, 3]),
        ("Covered by [1 and 3].", 4, [1, 3]),
        ("According to Source 2, it is 25 days.", 3, [2]),
        ("As passage 3 says, ten days.", 3, [3]),
        ("It is 25 days [Passage 2].", 3, [2]),
        ("It is 25 days [7].", 3, []),
        ("It is 25 days [0].", 3, []),
        ("It is 25 days [2][9].", 3, [2]),
        ("Twenty-five days, no citation.", 3, []),
        ("An out of range range [2-40].", 3, [2]),
        ("", 3, []),
    ],
)
def test_parse_citations(text: str, n: int, expected: list[int]) -> None:
    assert parse_citations(text, n) == expected


def test_parse_citations_with_no_passages_cites_nothing() -> None:
    assert parse_citations("It is [1].", 0) == []


def test_select_citations_lists_cited_passages_in_order_numbered_as_in_prompt() -> None:
    hits = make_hits(["alpha", "beta", "gamma"])
    text, cites = select_citations("Beta and gamma [3][2].", hits)
    assert text == "Beta and gamma [3][2]."
    assert [c.n for c in cites] == [3, 2]
    assert [c.chunk_id for c in cites] == ["c3", "c2"]
    assert all(c.cited for c in cites)
    assert cites[0].text == "gamma" and cites[0].title == "Doc 3"


def test_select_citations_falls_back_to_top_passages_when_nothing_is_cited() -> None:
    hits = make_hits(["alpha", "beta", "gamma"])
    text, cites = select_citations("Twenty-five days.", hits)
    assert text == "Twenty-five days."
    assert [c.chunk_id for c in cites] == ["c1", "c2"]
    assert [c.n for c in cites] == [1, 2]
    assert not any(c.cited for c in cites)


def test_select_citations_strips_out_of_range_markers_and_never_leaves_the_retrieved_set() -> None:
    hits = make_hits(["alpha", "beta"])
    text, cites = select_citations("It is 25 days [1][5]. Also [4, 2]. Source 9 agrees.", hits)
    assert "[5]" not in text and "[4" not in text and "Source 9" not in text
    assert text.startswith("It is 25 days [1].")
    assert "[2]" in text
    retrieved = {h.chunk.chunk_id for h in hits}
    assert {c.chunk_id for c in cites} <= retrieved
    assert [c.n for c in cites] == [1, 2]


def test_select_citations_only_out_of_range_falls_back_uncited() -> None:
    hits = make_hits(["alpha", "beta", "gamma"])
    text, cites = select_citations("It is 25 days [8].", hits)
    assert text == "It is 25 days."
    assert [c.cited for c in cites] == [False, False]


def test_select_citations_with_no_hits_returns_no_sources() -> None:
    text, cites = select_citations("Hello [1].", [])
    assert cites == []
    assert text == "Hello."


def test_citation_scores_and_locations_come_from_the_hit() -> None:
    hits = make_hits(["alpha"], dense_scores=[0.42])
    _, cites = select_citations("A [1].", hits)
    assert cites[0].score == pytest.approx(0.42)
    assert cites[0].source == "doc-1.md"
