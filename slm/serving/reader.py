"""Read before you write: the short answer, copied from the sentence that holds it.

The answer path used to have the model write a sentence and then quote the passage
sentence that best matched the question. A 135M model writes the fact wrongly or not at
all more often than it gets it right, and a quoted sentence leaves the reader to find the
fact in it. The reader does the finding:

1. the passage sentences of every retrieved passage (and of the top passage's neighbours)
   are ranked against the question (:func:`slm.serving.evidence.rank_evidence`), and the
   best few re-ranked by whether they could answer it, a sentence of another page than the
   top hit's needing a margin to win (:mod:`slm.serving.sentence_rank`);
2. the phrases of the best ``SENTENCES`` sentences are proposed as candidates
   (:mod:`slm.serving.spans`), "Yes" and "No" too for a yes/no question;
3. the answer model scores each candidate as its whole reply to "Sentence: … Question: …"
   (:meth:`LlamaGenerator.score_answers`), and the candidate with the best weighted sum of
   prior, model score and sentence score wins.

The weights were chosen on recorded tuning questions (``bench/reader_features.py``, never
the reported sample): the sentence's match with the question must dominate, because the
135M model is a good judge of which phrase of a sentence answers, and a poor judge of
which sentence does (with the model's score dominating, the reader picked the sentence
holding the answer about half as often as the MiniLM ranking's first choice does).

The short answer is therefore always a phrase of a passage (or yes/no decided on one), and
the nightly adapter, trained on the same prompt, sharpens exactly this choice. The
reading's ``confidence`` (the chosen sentence's re-ranking score) decides abstention; its
threshold is calibrated on questions whose passage is not in the index
(``retrieval.min_confidence``, figures in the README).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lorebot.types import SearchHit
from slm.serving import spans
from slm.serving.evidence import Evidence
from slm.serving.prompt import reader_messages

# Chosen on 40 XQuAD-en tuning questions recorded by bench/reader_features.py (none of the
# reported 200): short-answer F1 0.323 / EM 0.225, the answering sentence chosen for 0.65,
# against 0.248 / 0.175 / 0.475 with the earlier weights (2 sentences, model weight 4).
# Reading 2 or 3 sentences (with any sentence weight) chose the right sentence no more
# often and costs 2-3x the model calls; 6 phrases instead of 10 lose F1 (0.290).
#: Sentences whose phrases compete (best first by their match with the question).
SENTENCES = 1
#: Candidate phrases per sentence scored by the model (best first by prior).
CANDIDATES = 10
#: Weight of the model's mean log-probability against the phrase prior.
MODEL_WEIGHT = 1.0
#: Weight of the sentence's match with the question (its evidence score): decides between
#: sentences when more than one is read.
SENTENCE_WEIGHT = 4.0
#: Prior for "No" when the sentence is negated, for "Yes" when it is not.
YES_NO_PRIOR = 0.5
#: Weight of the model's mean log-probability of the chosen phrase in the reading's
#: confidence, next to the sentence's re-ranking score (abstention reads the sum).
CONFIDENCE_MODEL_WEIGHT = 0.0
#: Whose neighbouring chunks are read too: "top" (the top hit's) or "all" (every hit's).
NEIGHBOURS_OF = "top"

Neighbours = Callable[[SearchHit, int, int], list[Any]]


class AnswerScorer(Protocol):
    """What the reader needs from the answer model (LlamaGenerator, or a test fake)."""

    def score_answers(
        self, messages: list[dict[str, str]], answers: Sequence[str]
    ) -> list[float]: ...


@dataclass(frozen=True)
class Reading:
    """The short answer, the sentence it comes from, and how sure the reader is."""

    short: str
    evidence: Evidence
    confidence: float  # the sentence's re-ranking score (+ a share of the model's, see above)
    model_score: float  # mean log-probability per token the model gave the short answer


def reading_passages(
    hits: Sequence[SearchHit],
    neighbours: Neighbours | None,
    count: int,
    of: str = NEIGHBOURS_OF,
) -> tuple[list[SearchHit], list[tuple[int, bool, bool]]]:
    """The passages whose sentences the reader ranks, and where each comes from.

    The hits first, then the ``count`` chunks before and after the top hit (``of="top"``)
    or every hit (``of="all"``), less any already there: the answer often sits next to the
    chunk that matched. The origins are (retrieval rank of the hit, whether a neighbour,
    whether of the top hit's document).
    """
    passages = list(hits)
    top = _document(hits[0]) if hits else None
    origins = [(rank, False, _document(h) == top) for rank, h in enumerate(hits, start=1)]
    if not count or neighbours is None or not hits:
        return passages, origins
    seen = {h.chunk.chunk_id for h in hits}
    anchors = hits[:1] if of == "top" else hits
    for rank, hit in enumerate(anchors, start=1):
        for n in neighbours(hit, count, count):
            if n.chunk.chunk_id not in seen:
                seen.add(n.chunk.chunk_id)
                passages.append(n)
                origins.append((rank, True, _document(n) == top))
    return passages, origins


def _document(hit: SearchHit) -> tuple[str, str]:
    return hit.chunk.collection, hit.chunk.source


def read(
    question: str,
    sentences: Sequence[Evidence],
    scorer: AnswerScorer,
    *,
    sentences_read: int = SENTENCES,
    candidates: int = CANDIDATES,
) -> Reading | None:
    """The best short answer in the first ``sentences_read`` of ``sentences`` (best first)."""
    best: tuple[float, str, Evidence, float] | None = None
    yes_no = spans.is_yes_no(question)
    for evidence in sentences[:sentences_read]:
        if yes_no:
            negated = spans.negated(evidence.text)
            options = [
                ("Yes", 0.0 if negated else YES_NO_PRIOR),
                ("No", YES_NO_PRIOR if negated else 0.0),
            ]
        else:
            options = [
                (s.text, s.prior) for s in spans.candidates(question, evidence.text, candidates)
            ]
        if not options:
            continue
        scores = scorer.score_answers(
            reader_messages(question, evidence.text), [o[0] for o in options]
        )
        for (text, prior), model in zip(options, scores):
            total = prior + MODEL_WEIGHT * model + SENTENCE_WEIGHT * evidence.score
            if best is None or total > best[0]:
                best = (total, text, evidence, model)
    if best is None:
        return None
    _, text, evidence, model = best
    return Reading(
        short=text,
        evidence=evidence,
        confidence=evidence.score + CONFIDENCE_MODEL_WEIGHT * model,
        model_score=model,
    )
