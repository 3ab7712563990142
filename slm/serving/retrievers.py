"""Retrievers that need no index.

:class:`StaticRetriever` satisfies :class:`slm.serving.answer.Retriever` over a fixed list of
hits: it returns the hits it was given (filtered by collection) and records every search.
The refresh gate asks distractor-only questions through it; tests use it to check what the
answer path asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lorebot.types import SearchHit


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
