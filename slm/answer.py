"""Answering one question: retrieve, decide whether to abstain, prompt, generate, cite.

This is the pure middle of the answer path. The retriever and the generator are passed
in, so the Celery task, ``lorebot eval`` and the tests all run exactly this code, with the
real index and model or with fakes.

Abstention happens in two places. Before the model: no passage was found, or the best
passage is too far from the question (its dense cosine similarity is below
``retrieval.min_score``), so the model is not called at all, which is both safer and
faster. After the model: it said the passages do not contain the answer. Either way the
answer says the documents do not cover it and lists the nearest sources, marked as not
cited.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from lorebot.settings import ModelSettings, RetrievalSettings
from lorebot.types import Answer, Question, SearchHit, Turn
from slm.citations import fallback_citations, select_citations
from slm.generator import Generator
from slm.prompt import build_messages, is_not_found

log = logging.getLogger(__name__)

#: The reply when the documents do not cover a question (user-facing; shown with the
#: nearest sources underneath).
ABSTAIN_TEXT = "I could not find this in the documents I can search."

#: Words that make a short question lean on the previous one ("and for contractors?").
_ANAPHORA = re.compile(
    r"\b(it|its|that|this|those|these|they|them|their|there|he|she|his|her|same|also|one)\b",
    re.IGNORECASE,
)
_FOLLOW_UP_OPENERS = re.compile(
    r"^\s*(and|but|also|so|then|what about|how about|what if|same for|why)\b", re.IGNORECASE
)
_SHORT_QUESTION_WORDS = 5
#: Nearest sources listed under an abstention.
ABSTAIN_SOURCES = 3


@runtime_checkable
class Retriever(Protocol):
    """The read side of an index, as the answer path needs it."""

    version: str

    def search(
        self,
        query: str,
        k: int = 4,
        collections: list[str] | None = None,
        candidates: int = 20,
    ) -> list[SearchHit]: ...


def is_follow_up(question: str) -> bool:
    """Whether a question probably depends on the previous one to make sense."""
    words = question.split()
    return (
        len(words) <= _SHORT_QUESTION_WORDS
        or bool(_FOLLOW_UP_OPENERS.search(question))
        or bool(_ANAPHORA.search(question))
    )


def retrieval_query(question: str, history: Sequence[Turn]) -> str:
    """The text searched for: the question, preceded by the previous question for a follow-up.

    A follow-up such as "and for contractors?" retrieves nothing useful on its own; the
    previous user question supplies the topic. Only the last user turn is added, and only
    when the new question looks like a follow-up, so a fresh question in an old thread is
    searched as asked.
    """
    previous = next((t.text for t in reversed(history) if t.role == "user" and t.text.strip()), None)
    if previous is None or not is_follow_up(question):
        return question
    return f"{' '.join(previous.split())} {' '.join(question.split())}"


def best_dense_score(hits: Sequence[SearchHit]) -> float | None:
    """The highest dense similarity among the hits; None when the retriever gives none."""
    scores = [h.dense_score for h in hits if h.dense_score is not None]
    return max(scores) if scores else None


def _abstain(
    question: Question,
    hits: Sequence[SearchHit],
    *,
    reason: str,
    index_version: str | None,
    adapter: str | None,
    timings: dict[str, float],
    started: float,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    sources: int,
) -> Answer:
    timings["total"] = (time.perf_counter() - started) * 1000
    log.info(
        "question %s abstained (%s) index=%s adapter=%s hits=%d",
        question.question_id,
        reason,
        index_version,
        adapter,
        len(hits),
    )
    return Answer(
        question_id=question.question_id,
        question=question.text,
        answer=ABSTAIN_TEXT,
        citations=fallback_citations(hits, sources),
        abstained=True,
        index_version=index_version,
        adapter=adapter,
        timings_ms=timings,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def answer_question(
    question: Question,
    retriever: Retriever,
    generator: Generator,
    *,
    retrieval: RetrievalSettings,
    model: ModelSettings,
    on_token: Callable[[str], None] | None = None,
) -> Answer:
    """Answer ``question`` from the documents ``retriever`` can see, citing its sources.

    ``on_token`` receives the answer as it is generated (the Slack delivery edits its
    message with it). ``timings_ms`` has ``retrieve``, ``prompt_build``, ``generate``,
    ``first_token`` (from the start of this call to the first streamed piece),
    ``prompt_eval`` and ``decode`` (the model's own parts) and ``total``.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    index_version = getattr(retriever, "version", None)
    adapter = getattr(generator, "adapter", None)

    query = retrieval_query(question.text, question.history)
    hits = retriever.search(
        query, k=retrieval.top_k, collections=question.collections, candidates=retrieval.candidates
    )
    timings["retrieve"] = (time.perf_counter() - started) * 1000
    common = {"index_version": index_version, "adapter": adapter, "timings": timings, "started": started}

    if not hits:
        return _abstain(question, hits, reason="no passages", sources=0, **common)
    top = best_dense_score(hits)
    if top is not None and top < retrieval.min_score:
        return _abstain(
            question,
            hits,
            reason=f"best similarity {top:.3f} < {retrieval.min_score:.3f}",
            sources=ABSTAIN_SOURCES,
            **common,
        )

    t_prompt = time.perf_counter()
    messages, used = build_messages(
        question.text,
        hits,
        question.history,
        context_tokens=retrieval.context_tokens,
        count_tokens=generator.count_tokens,
    )
    timings["prompt_build"] = (time.perf_counter() - t_prompt) * 1000

    first_piece: list[float] = []
    sink = [on_token]

    def stream(piece: str) -> None:
        if not first_piece:
            first_piece.append(time.perf_counter())
        if sink[0] is not None:
            try:
                sink[0](piece)
            except Exception:  # a failed Slack update must not lose the answer
                log.warning(
                    "question %s: token callback failed, streaming stopped", question.question_id, exc_info=True
                )
                sink[0] = None

    t_gen = time.perf_counter()
    generation = generator.generate(messages, max_tokens=model.max_tokens, on_token=stream)
    timings["generate"] = (time.perf_counter() - t_gen) * 1000
    timings["first_token"] = ((first_piece[0] if first_piece else time.perf_counter()) - started) * 1000
    timings["prompt_eval"] = generation.timings_ms.get("prompt", 0.0)
    timings["decode"] = generation.timings_ms.get("decode", 0.0)

    if not generation.text.strip() or is_not_found(generation.text):
        return _abstain(
            question,
            used,
            reason="the model found no answer in the passages",
            sources=ABSTAIN_SOURCES,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            **common,
        )

    text, citations = select_citations(generation.text, used)
    timings["total"] = (time.perf_counter() - started) * 1000
    log.info(
        "question %s answered index=%s adapter=%s passages=%d cited=%s prompt_tokens=%d "
        "evaluated=%s completion_tokens=%d total_ms=%.0f",
        question.question_id,
        index_version,
        adapter,
        len(used),
        [c.n for c in citations if c.cited],
        generation.prompt_tokens,
        generation.prompt_tokens_evaluated,
        generation.completion_tokens,
        timings["total"],
    )
    return Answer(
        question_id=question.question_id,
        question=question.text,
        answer=text,
        citations=citations,
        abstained=False,
        index_version=index_version,
        adapter=adapter,
        timings_ms=timings,
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
    )
