"""Fakes shared by the test suite: a scriptable generator and search hits written in a test.

:class:`FakeGenerator` satisfies :class:`slm.serving.generator.Generator` without a model;
:func:`make_hit` and :func:`make_hits` build the :class:`lorebot.types.SearchHit` values that
:class:`slm.serving.retrievers.StaticRetriever` hands back.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from lorebot.errors import GenerationError
from lorebot.types import Chunk, SearchHit
from slm.serving.generator import Generation, Messages, TokenCallback


class FakeGenerator:
    """A scriptable generator for unit tests.

    ``replies`` is either a list of answers returned in order, or a function of the
    messages. Every call's messages are recorded in :attr:`calls`. Text is streamed word by
    word to ``on_token`` and cut at ``max_tokens`` words; a "token" is a whitespace-separated
    word, which is also what :meth:`count_tokens` counts, so budgets are easy to reason about.
    """

    def __init__(
        self,
        replies: Sequence[str] | Callable[[Messages], str],
        *,
        adapter: str | None = None,
    ) -> None:
        self._replies: list[str] | Callable[[Messages], str] = (
            replies if callable(replies) else list(replies)
        )
        self.adapter = adapter
        self.calls: list[Messages] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        self.calls.append([dict(m) for m in messages])
        if callable(self._replies):
            reply = self._replies(messages)
        elif self._replies:
            reply = self._replies.pop(0)
        else:
            raise GenerationError(
                "FakeGenerator has no scripted reply left", fix="script more replies"
            )
        pieces = re.findall(r"\S+\s*", reply)[:max_tokens]
        for piece in pieces:
            if on_token is not None:
                on_token(piece)
        text = "".join(pieces).strip()
        prompt_tokens = sum(self.count_tokens(m.get("content", "")) for m in messages)
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(pieces),
            timings_ms={"prompt": 0.0, "decode": 0.0, "first_token": 0.0, "total": 0.0},
            prompt_tokens_evaluated=prompt_tokens,
            finish_reason="length" if len(re.findall(r"\S+", reply)) > max_tokens else "stop",
        )


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
