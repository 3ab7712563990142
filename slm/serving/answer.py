"""Answering one question: retrieve, decide whether to abstain, prompt, generate, cite.

This is the pure middle of the answer path. The retriever and the generator are passed
in, so the Celery task, ``lorebot eval`` and the tests all run exactly this code, with the
real index and model or with fakes.

Abstention happens in two places. Before the model: no passage was found, or the best
passage is too far from the question (its dense cosine similarity is below
``retrieval.min_score``), so the model is not called at all, which is both safer and
faster. After the model: it said the passages do not contain the answer, or its answer
names a number or a name that no passage contains (:mod:`slm.serving.grounding`) and nothing
supported comes before it (otherwise the answer is cut to its supported first part).
Either way the answer says the documents do not cover it and lists the nearest sources,
marked as not cited.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from lorebot.settings import ModelSettings, RetrievalSettings
from lorebot.types import Answer, Question, SearchHit, Turn
from slm.serving.citations import fallback_citations, select_citations
from slm.serving.evidence import (
    EVIDENCE_PASSAGES,
    Encode,
    Evidence,
    compose,
    rank_evidence,
    select_evidence,
)
from slm.serving.generator import Generator
from slm.serving.grounding import GroundingCheck
from slm.serving.prompt import build_messages, is_not_found
from slm.serving.reader import SENTENCES, read, reading_passages
from slm.serving.reviewed import ReviewedAnswers, answer_reviewed
from slm.serving.sentence_rank import SHORTLIST, rerank

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


# Kept by measurement (bench/follow_ups.py on the 50 threads of tests/fixtures/follow_ups.json,
# right document among the 4 passages retrieved): this conditional concatenation finds it for
# 37 of 40 follow-ups, against 26 for the follow-up alone, 39 for always concatenating and 29
# for SmolLM2 rewriting the question (+180 ms to write it, about 0.5 s more per answer).
# Always concatenating is not clearly better: it wins 2 follow-ups but ranks fresh questions
# in an old thread first for 4 of 10 instead of 7 (top 4: 8 instead of 9) and puts the key
# fact in 23 answers instead of 24. Where is_follow_up() misjudges those threads, and what it
# costs, is listed in tests/slm/test_follow_ups.py (KNOWN_MISSES).
def retrieval_query(question: str, history: Sequence[Turn]) -> str:
    """The text searched for: the question, preceded by the previous question for a follow-up.

    A follow-up such as "and for contractors?" retrieves nothing useful on its own; the
    previous user question supplies the topic. Only the last user turn is added, and only
    when the new question looks like a follow-up, so a fresh question in an old thread is
    searched as asked.
    """
    previous = next(
        (t.text for t in reversed(history) if t.role == "user" and t.text.strip()), None
    )
    if previous is None or not is_follow_up(question):
        return question
    return f"{' '.join(previous.split())} {' '.join(question.split())}"


def best_dense_score(hits: Sequence[SearchHit]) -> float | None:
    """The highest dense similarity among the hits; None when the retriever gives none."""
    scores = [h.dense_score for h in hits if h.dense_score is not None]
    return max(scores) if scores else None


class _StreamGate:
    """Passes streamed pieces to the caller's callback, until it fails or the answer invents.

    The check runs on complete words only (the last one may be half-written: "Qu" of
    "Quillfeather"). Once a piece names something no passage has, nothing more is shown;
    the final answer (cut or abstained) replaces the streamed text anyway.
    """

    def __init__(
        self, question_id: str, sink: Callable[[str], None] | None, grounding: GroundingCheck | None
    ):
        self.question_id = question_id
        self.sink = sink
        self.grounding = grounding
        self.first_at: float | None = None
        self.text = ""

    def __call__(self, piece: str) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        if self.sink is None:
            return
        self.text += piece
        complete = self.text[: max(self.text.rfind(" "), self.text.rfind("\n"), 0)]
        if self.grounding is not None and self.grounding(complete):
            log.info("question %s: streaming stopped at an unsupported term", self.question_id)
            self.sink = None
            return
        try:
            self.sink(piece)
        except Exception:  # a failed Slack update must not lose the answer
            log.warning(
                "question %s: token callback failed, streaming stopped",
                self.question_id,
                exc_info=True,
            )
            self.sink = None


def _review(
    question_id: str, text: str, grounding: GroundingCheck | None
) -> tuple[str, str | None]:
    """The answer text to keep, or a reason to abstain instead."""
    if not text.strip() or is_not_found(text):
        return text, "the model found no answer in the passages"
    if grounding is None:
        return text, None
    invented = grounding(text)
    if not invented:
        return text, None
    kept = grounding.supported_prefix(text)
    if kept is None:
        return text, f"the answer names what no passage does: {', '.join(invented[:5])}"
    log.info("question %s: answer cut before unsupported %s", question_id, ", ".join(invented[:5]))
    return kept, None


def _grounds(question: Question, used: Sequence[SearchHit]) -> list[str]:
    """Everything an answer may legitimately take a fact from."""
    texts = [question.text, *(t.text for t in question.history)]
    for hit in used:
        texts += [hit.chunk.title, hit.chunk.heading, hit.chunk.text]
    return texts


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


def _sentence_scoring(question: Question, retriever: Retriever, encode: Encode | None) -> dict:
    """How passage sentences are scored: the index's own embedder, stored sentence vectors
    and cached question vector, where the retriever offers them."""
    if encode is None:  # the index's own query embedder, when it offers one
        encode = getattr(retriever, "encode", None)
    query_vector = getattr(retriever, "query_vector", None)
    return {
        "encode": encode,
        "stored": getattr(retriever, "sentence_vectors", None),
        "query_vector": query_vector(question.text) if query_vector is not None else None,
    }


def _evidence(
    question: Question,
    used: Sequence[SearchHit],
    retriever: Retriever,
    encode: Encode | None,
    extra: Sequence[SearchHit] = (),
) -> Evidence | None:
    """The evidence quote, from the index's stored sentence vectors where it has them.

    Its sentences come from the first passages of the prompt and from ``extra`` (the top
    passage's neighbours), whose numbers follow the prompt's: ``[*used, *extra]``.
    """
    first = list(used[:EVIDENCE_PASSAGES])
    evidence = select_evidence(
        question.text,
        [*first, *extra],
        passages=len(first) + len(extra),
        **_sentence_scoring(question, retriever, encode),
    )
    if evidence is not None and evidence.passage > len(first):  # a neighbour's sentence
        evidence = replace(evidence, passage=evidence.passage - len(first) + len(used))
    return evidence


def answer_question(
    question: Question,
    retriever: Retriever,
    generator: Generator,
    *,
    retrieval: RetrievalSettings,
    model: ModelSettings,
    on_token: Callable[[str], None] | None = None,
    check_grounding: bool = True,
    encode: Encode | None = None,
    quote_evidence: bool | None = None,
    reviewed: ReviewedAnswers | None = None,
) -> Answer:
    """Answer ``question`` from the documents ``retriever`` can see, citing its sources.

    ``on_token`` receives the answer as it is generated (the Slack delivery edits its
    message with it). With ``check_grounding`` an answer that names a number or a name
    found in no passage (nor the question or thread) is cut before it, or replaced by
    the abstention when nothing supported precedes it (see :mod:`slm.serving.grounding`).
    ``timings_ms`` has ``retrieve``, ``prompt_build``, ``generate``, ``first_token``
    (from the start of this call to the first streamed piece), ``prompt_eval`` and
    ``decode`` (the model's own parts), ``evidence`` (choosing the quote) and ``total``.
    A question matching one of ``reviewed`` (corrections an admin accepted) that its asker
    may see is answered from it (:mod:`slm.serving.reviewed`).
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
    common = {
        "index_version": index_version,
        "adapter": adapter,
        "timings": timings,
        "started": started,
    }
    match = (
        reviewed.match(
            question.text, question.collections, encode or getattr(retriever, "encode", None)
        )
        if reviewed
        else None
    )
    if match is not None:
        return answer_reviewed(question, match, hits, generator, common=common, on_token=on_token)

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

    if model.answer_mode == "read" and hasattr(generator, "score_answers"):
        return _answer_by_reading(
            question,
            hits,
            retriever,
            generator,
            retrieval=retrieval,
            encode=encode,
            common=common,
            on_token=on_token,
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

    grounding = GroundingCheck(_grounds(question, used)) if check_grounding else None
    gate = _StreamGate(question.question_id, on_token, grounding)
    t_gen = time.perf_counter()
    generation = generator.generate(messages, max_tokens=model.max_tokens, on_token=gate)
    timings["generate"] = (time.perf_counter() - t_gen) * 1000
    timings["first_token"] = ((gate.first_at or time.perf_counter()) - started) * 1000
    timings["prompt_eval"] = generation.timings_ms.get("prompt", 0.0)
    timings["decode"] = generation.timings_ms.get("decode", 0.0)

    # After the model, so the quote's cost never delays the first streamed token.
    t_evidence = time.perf_counter()
    if quote_evidence is None:
        quote_evidence = model.quote_evidence
    extra = _neighbours(used, retriever, retrieval.neighbours) if quote_evidence else []
    evidence = _evidence(question, used, retriever, encode, extra) if quote_evidence else None
    timings["evidence"] = (time.perf_counter() - t_evidence) * 1000

    raw_text, refusal = _review(question.question_id, generation.text, grounding)
    if refusal is not None and evidence is not None and not is_not_found(generation.text):
        # The model's sentence is empty or invents: the quoted evidence answers alone.
        log.info(
            "question %s: model sentence dropped (%s); quoting the evidence",
            question.question_id,
            refusal,
        )
        raw_text, refusal = "", None
    if refusal is not None:
        return _abstain(
            question,
            used,
            reason=refusal,
            sources=ABSTAIN_SOURCES,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            **common,
        )

    if evidence is not None:
        raw_text = compose(raw_text, evidence, question.text)
    quoted_neighbour = evidence is not None and evidence.passage > len(used)
    text, citations = select_citations(raw_text, [*used, *extra] if quoted_neighbour else used)
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


def _neighbours(hits: Sequence[SearchHit], retriever: Retriever, count: int) -> list[SearchHit]:
    """The ``count`` chunks before and after the top hit in its document, less the hits.

    The answer often sits next to the chunk that matched (a list of incidents in one, the
    hotline to call in the next): these are read as candidates too, and cited as
    themselves when the answer comes from one.
    """
    neighbours = getattr(retriever, "neighbours", None)
    if not count or neighbours is None or not hits:
        return []
    seen = {h.chunk.chunk_id for h in hits}
    return [n for n in neighbours(hits[0], count, count) if n.chunk.chunk_id not in seen]


def _with_neighbours(hits: list[SearchHit], retriever: Retriever, count: int) -> list[SearchHit]:
    """The hits, then the top hit's neighbouring chunks that are not hits already."""
    return [*hits, *_neighbours(hits, retriever, count)]


def _answer_by_reading(
    question: Question,
    hits: list[SearchHit],
    retriever: Retriever,
    generator: Generator,
    *,
    retrieval: RetrievalSettings,
    encode: Encode | None,
    common: dict,
    on_token: Callable[[str], None] | None = None,
) -> Answer:
    """The short answer read from the passages (:mod:`slm.serving.reader`), then its quote.

    ``common`` holds what every answer records (index and adapter versions, the timings and
    the start), as in :func:`answer_question`. Nothing is generated, so ``on_token`` gets
    the whole answer in one piece as soon as it is read (its ``first_token`` time).
    """
    timings, started = common["timings"], common["started"]
    index_version, adapter = common["index_version"], common["adapter"]
    t_read = time.perf_counter()
    passages, origins = reading_passages(
        hits, getattr(retriever, "neighbours", None), retrieval.neighbours
    )
    ranked = rank_evidence(
        question.text,
        passages,
        passages=len(passages),
        keep=max(SENTENCES, SHORTLIST),
        **_sentence_scoring(question, retriever, encode),
    )
    ranked = rerank(question.text, ranked, lambda n: origins[n - 1])
    timings["evidence"] = (time.perf_counter() - t_read) * 1000
    t_model = time.perf_counter()
    reading = read(question.text, ranked, generator)  # type: ignore[arg-type]
    timings["generate"] = (time.perf_counter() - t_model) * 1000
    timings["read"] = (time.perf_counter() - t_read) * 1000
    if reading is None:
        return _abstain(
            question, passages, reason="no sentence to read", sources=ABSTAIN_SOURCES, **common
        )
    if reading.confidence < retrieval.min_confidence:
        return _abstain(
            question,
            passages,
            reason=f"reading confidence {reading.confidence:.3f} < {retrieval.min_confidence:.3f}",
            sources=ABSTAIN_SOURCES,
            **common,
        )
    n = reading.evidence.passage
    short = reading.short
    quote = reading.evidence.text
    raw = f"{short} [{n}]\n> {quote} [{n}]" if short != quote else f"> {quote} [{n}]"
    text, citations = select_citations(raw, passages)
    if on_token is not None:
        try:
            on_token(text)
        except Exception:  # a failed Slack update must not lose the answer
            log.warning("question %s: token callback failed", question.question_id, exc_info=True)
    timings["first_token"] = (time.perf_counter() - started) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    log.info(
        "question %s read index=%s adapter=%s passages=%d short=%r confidence=%.3f total_ms=%.0f",
        question.question_id,
        index_version,
        adapter,
        len(passages),
        short[:60],
        reading.confidence,
        timings["total"],
    )
    return Answer(
        question_id=question.question_id,
        question=question.text,
        answer=text,
        short_answer=short,
        citations=citations,
        abstained=False,
        index_version=index_version,
        adapter=adapter,
        timings_ms=timings,
    )
