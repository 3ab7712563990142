"""Small in-memory stand-ins for the answer path's dependencies, for tests and demos.

:class:`StaticRetriever` satisfies :class:`slm.serving.answer.Retriever` without an index: it
returns the hits it was given (filtered by collection), and records every search, so a
test can check what the answer path asked for. Pair it with
:class:`slm.serving.generator.FakeGenerator`, or with the real model when the model is the point.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from lorebot.types import Chunk, SearchHit


@dataclass
class SearchCall:
    query: str
    k: int
    collections: list[str] | None
    candidates: int


@dataclass
class StaticRetriever:
    """Returns ``hits`` in order, first ``k``, keeping only the allowed collections."""

    hits: list[SearchHit]
    version: str = "test-index"
    calls: list[SearchCall] = field(default_factory=list)

    def search(
        self,
        query: str,
        k: int = 4,
        collections: list[str] | None = None,
        candidates: int = 20,
    ) -> list[SearchHit]:
        self.calls.append(SearchCall(query, k, collections, candidates))
        allowed = [h for h in self.hits if collections is None or h.chunk.collection in collections]
        return allowed[:k]


def make_hit(
    text: str,
    *,
    title: str = "Handbook",
    heading: str = "",
    chunk_id: str | None = None,
    source: str | None = None,
    collection: str = "general",
    dense_score: float | None = 0.8,
    score: float | None = None,
) -> SearchHit:
    """A search hit around a passage written in the test."""
    cid = (
        chunk_id or "chunk-" + hashlib.sha1(f"{title}\0{heading}\0{text}".encode()).hexdigest()[:10]
    )
    chunk = Chunk(
        chunk_id=cid,
        text=text,
        title=title,
        heading=heading,
        source=source or f"{title.lower().replace(' ', '-')}.md",
        collection=collection,
    )
    return SearchHit(
        chunk=chunk,
        score=dense_score if score is None and dense_score is not None else (score or 0.0),
        dense_score=dense_score,
    )


def make_hits(
    texts: Sequence[str], *, dense_scores: Sequence[float | None] | None = None
) -> list[SearchHit]:
    """Hits titled "Doc 1".."Doc n" with descending dense scores (or the ones given)."""
    scores = (
        list(dense_scores)
        if dense_scores is not None
        else [0.9 - 0.1 * i for i in range(len(texts))]
    )
    return [
        make_hit(text, title=f"Doc {i}", chunk_id=f"c{i}", dense_score=scores[i - 1])
        for i, text in enumerate(texts, start=1)
    ]
