"""Which numbered passages an answer cites, and the sources shown under it.

The prompt numbers passages [1]..[n]; a small model cites them in many spellings
("[1]", "[1, 2]", "[1][3]", "[1-2]", "Source 1", "passage 2"). Parsing is forgiving, but a
citation is only ever one of the passages the model was shown: a number outside 1..n is
dropped from the list and removed from the text, so no answer points at a source that
was not retrieved.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lorebot.types import Citation, SearchHit

#: Sources listed under an answer that cites nothing (shown with cited=False).
FALLBACK_SOURCES = 2

# A bracketed group of numbers: [1], [1, 2], [1 and 3], [2-4], [Passage 1], [Source 2; 3].
_BRACKET = re.compile(
    r"\[\s*(?:(?:passages?|sources?|docs?|documents?)\s*)?"
    r"(\d+(?:\s*(?:,|;|and|&|-|–|to)\s*\d+)*)\s*\]",
    re.IGNORECASE,
)
# An unbracketed mention: "Source 1", "passage 2", "(passage 3)".
_WORDED = re.compile(r"\b(?:passage|source|document)\s+#?(\d+)\b", re.IGNORECASE)
_NUMBER_OR_RANGE = re.compile(r"(\d+)\s*(?:(?:-|–|to)\s*(\d+))?")
_MAX_RANGE = 20


def _numbers(group: str) -> list[int]:
    """Numbers named in the inside of a bracket, with short ranges expanded."""
    out: list[int] = []
    for m in _NUMBER_OR_RANGE.finditer(group):
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo or hi - lo > _MAX_RANGE:
            hi = lo
        out.extend(range(lo, hi + 1))
    return out


def parse_citations(answer_text: str, n_passages: int) -> list[int]:
    """Passage numbers the answer cites, 1-based, in order of first mention, only 1..n."""
    found: list[tuple[int, int]] = []  # (position, number)
    for m in _BRACKET.finditer(answer_text):
        found.extend((m.start(), n) for n in _numbers(m.group(1)))
    for m in _WORDED.finditer(answer_text):
        found.append((m.start(), int(m.group(1))))
    seen: list[int] = []
    for _, n in sorted(found, key=lambda pair: pair[0]):
        if 1 <= n <= n_passages and n not in seen:
            seen.append(n)
    return seen


def _clean_text(answer_text: str, n_passages: int) -> str:
    """The answer with citation markers normalised to [n] and out-of-range ones removed."""

    def bracket(m: re.Match[str]) -> str:
        kept = [n for n in dict.fromkeys(_numbers(m.group(1))) if 1 <= n <= n_passages]
        return "".join(f"[{n}]" for n in kept)

    def worded(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return m.group(0) if 1 <= n <= n_passages else ""

    text = _BRACKET.sub(bracket, answer_text)
    text = _WORDED.sub(worded, text)
    text = re.sub(r"[ \t]+([.,;:!?])", r"\1", text)  # "fact [9]." -> "fact ." -> "fact."
    text = re.sub(r"\(\s*\)", "", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return text.strip()


def to_citation(n: int, hit: SearchHit, *, cited: bool) -> Citation:
    """The citation for passage number ``n`` (as numbered in the prompt)."""
    c = hit.chunk
    return Citation(
        n=n,
        chunk_id=c.chunk_id,
        title=c.title,
        source=c.source,
        collection=c.collection,
        heading=c.heading,
        page=c.page,
        url=c.url,
        score=hit.score,
        text=c.text,
        cited=cited,
    )


def fallback_citations(hits: Sequence[SearchHit], limit: int = FALLBACK_SOURCES) -> list[Citation]:
    """The top passages, marked as not cited: shown when the answer names no source."""
    return [to_citation(i, hit, cited=False) for i, hit in enumerate(hits[:limit], start=1)]


def select_citations(
    answer_text: str, used_hits: Sequence[SearchHit], *, fallback: int = FALLBACK_SOURCES
) -> tuple[str, list[Citation]]:
    """The cleaned answer and the sources to show under it.

    Cited passages come first-mention first, numbered as in the prompt so the [n] in the
    text matches the list. When nothing valid is cited, the top ``fallback`` passages are
    listed with ``cited=False`` so the reader can still check the answer.
    """
    n = len(used_hits)
    clean = _clean_text(answer_text, n)
    cited = parse_citations(clean, n)
    if cited:
        return clean, [to_citation(i, used_hits[i - 1], cited=True) for i in cited]
    return clean, fallback_citations(used_hits, fallback)
