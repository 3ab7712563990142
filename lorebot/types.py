"""Domain types that cross package and process boundaries.

They are pydantic models so that a task payload or result survives JSON (Celery's
serializer) unchanged: ``Answer.model_validate(answer.model_dump(mode="json"))``.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field


def new_id() -> str:
    """A short random id for questions and error references."""
    return uuid.uuid4().hex[:12]


class Chunk(BaseModel):
    """A passage of a document, the unit of retrieval and citation."""

    chunk_id: str
    text: str
    title: str
    source: str = Field(description="Source path (relative to the ingest root) or URL.")
    collection: str
    heading: str = Field("", description="Heading path, outermost first, joined with ' > '.")
    page: int | None = None
    url: str | None = None
    modified: str | None = Field(None, description="ISO time the source file was last modified.")
    content_hash: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


class SearchHit(BaseModel):
    """A chunk as found by a search, with the scores that ranked it."""

    chunk: Chunk
    row: int | None = Field(
        None,
        description=(
            "The chunk's row in its index version (per-chunk data such as sentence vectors)."
        ),
    )
    score: float = Field(description="The fused score used for ranking.")
    dense_score: float | None = None
    keyword_score: float | None = None


class Turn(BaseModel):
    """One earlier exchange in a Slack thread, used as context for a follow-up."""

    role: str = Field(description="'user' or 'assistant'")
    text: str


class Question(BaseModel):
    """What a worker is asked to answer."""

    question_id: str = Field(default_factory=new_id)
    text: str
    collections: list[str] | None = Field(
        None, description="Collections the asker may see; None = all collections."
    )
    history: list[Turn] = Field(default_factory=list)
    user: str | None = None
    channel: str | None = None


class Citation(BaseModel):
    """A numbered source shown under an answer."""

    n: int
    chunk_id: str
    title: str
    source: str
    collection: str
    heading: str = ""
    page: int | None = None
    url: str | None = None
    score: float
    text: str
    cited: bool = Field(True, description="False when shown as a fallback, not cited by the model.")

    def snippet(self, limit: int = 200) -> str:
        """The passage shortened to about `limit` characters on a word boundary."""
        flat = " ".join(self.text.split())
        if len(flat) <= limit:
            return flat
        cut = flat[:limit].rsplit(" ", 1)[0]
        return cut + "…"

    def location(self) -> str:
        """Where the passage comes from: URL if known, else path, with page."""
        where = self.url or self.source
        return f"{where}, p. {self.page}" if self.page else where


#: Characters of each passage kept in a stored answer (compact()): more than the snippet
#: Slack shows (200), so rendering a stored answer gives the same message.
STORED_PASSAGE_CHARS = 240
#: Longest answer text kept in a stored answer.
STORED_ANSWER_CHARS = 4000


class Answer(BaseModel):
    """The result of answering one question."""

    question_id: str
    question: str
    answer: str
    short_answer: str | None = Field(
        None, description="The shortest phrase that answers, copied from a passage (or yes/no)."
    )
    citations: list[Citation] = Field(default_factory=list)
    abstained: bool = False
    index_version: str | None = None
    adapter: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def compact(self, passage_chars: int = STORED_PASSAGE_CHARS) -> Answer:
        """This answer as kept in Redis: passages cut to their snippet, sizes bounded.

        What the Slack message and the feedback buttons need, without the full passage
        texts (a few KiB per answer that would otherwise sit in Redis for every question).
        ``passage_chars`` below the snippet length (200) no longer renders the same message.
        """
        return self.model_copy(
            update={
                "question": self.question[:STORED_ANSWER_CHARS],
                "answer": self.answer[:STORED_ANSWER_CHARS],
                "citations": [
                    c.model_copy(update={"text": " ".join(c.text.split())[:passage_chars]})
                    for c in self.citations[:20]
                ],
            }
        )
