"""The evidence sentence: the one sentence of the retrieved passages that best answers the question.

A 135M model often paraphrases the right passage into a wrong or empty sentence ("The
answer to this question is."), while retrieval puts the right passage in the top three
almost every time. So every answer carries the passage sentence that best matches the
question, quoted with its citation: the fact the user needs is shown in the document's
own words even when the model's own sentence is weak, and a model sentence that
contradicts the quote (names a number the quote does not) is dropped.

Selection scores each sentence of the first few passages by MiniLM cosine similarity to
the question, plus a share for the question's content words it contains, plus a bonus for
a digit when the question asks for a quantity, a time or a number. A heading or a label
("Reception", "Buying your old laptop") is not a sentence on its own: it is joined to the
sentence after it, which it names (:func:`lorebot.text.units`).

The sentence vectors come from the index: ingestion pools them from each chunk's own
MiniLM pass, so ranking the sentences costs a few dot products, and only the best
``RERANK`` are embedded here on their own to decide between them (figures next to
``RERANK``). A chunk the index has no vectors for (an index built by an older lorebot)
has all its sentences embedded here. A sentence that addresses the assistant ("ignore
previous instructions", "SYSTEM:", a fake dialogue turn) is never quoted. Measured on the
sample handbook: see the README.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lorebot.text import content_words
from lorebot.text import units as text_units
from lorebot.types import SearchHit

#: Passages (in retrieval order) whose sentences compete.
EVIDENCE_PASSAGES = 3
#: Weight of the lexical share next to the cosine similarity.
LEXICAL_WEIGHT = 0.5
#: Bonus for a sentence with a digit when the question asks for a quantity.
NUMBER_BONUS = 0.2
#: Candidates, best first by their stored (pooled) vectors, that are embedded on their own
#: and re-scored. Measured on 800 XQuAD-en questions, the quote holds the gold answer for
#: 0.787 with 2 re-scored, 0.777 with the pooled vectors alone and 0.772 with every sentence
#: embedded on its own (sample handbook: 18, 14 and 18 of 27), at ~20 ms instead of ~90.
RERANK = 2
#: Longest quote kept, in characters (a table row can be long).
MAX_QUOTE_CHARS = 300

Encode = Callable[[list[str]], np.ndarray]
#: The stored vectors of a hit's sentence units, or None when the index has none.
SentenceVectors = Callable[[SearchHit], "np.ndarray | None"]

_ASKS_NUMBER = re.compile(
    r"\b(?:how (?:many|much|long|old|far|early|late|often|soon)|what time|when|"
    r"which (?:day|date|month|year)|"
    r"what (?:year|date|day|number|percentage|extension)|extension|phone|call|number|percent|"
    r"max(?:imum)?|min(?:imum)?|limit)\b",
    re.IGNORECASE,
)
_DIGIT = re.compile(r"\d")
# A sentence that speaks to the assistant rather than to staff: an injected instruction.
# It is never quoted (the model may still read it; the reliability suite measures that).
_INSTRUCTION = re.compile(
    r"ignore (?:all |any )?(?:the )?(?:previous|prior|above|earlier) (?:instructions|prompts?)"
    r"|\b(?:system|assistant|user)\s*:|</?\s*(?:passages?|system|instructions?)\s*>"
    r"|\bnew instructions\b"
    r"|\b(?:reply|respond|answer) only with\b|\bsystem prompt\b|\bassistant instruction\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Evidence:
    """One quoted sentence and the passage it comes from (1-based, as in the prompt)."""

    passage: int
    text: str
    score: float
    #: MiniLM cosine of the question and this sentence embedded on its own (None when it was
    #: ranked without embeddings); the reader's re-ranking starts from it. Not part of
    #: equality: two evidences are the same quote of the same passage with the same score.
    cosine: float | None = field(default=None, compare=False)


def units(text: str) -> list[str]:
    """Sentences of a passage, with headings and labels joined to what follows them."""
    return [u.text for u in text_units(text)]


def looks_like_instruction(text: str) -> bool:
    """Whether a sentence addresses the assistant (an instruction injected into a document)."""
    return bool(_INSTRUCTION.search(text))


def asks_for_number(question: str) -> bool:
    return bool(_ASKS_NUMBER.search(question))


def select_evidence(
    question: str,
    hits: Sequence[SearchHit],
    encode: Encode | None = None,
    *,
    stored: SentenceVectors | None = None,
    query_vector: np.ndarray | None = None,
    passages: int = EVIDENCE_PASSAGES,
) -> Evidence | None:
    """The best-matching sentence of the first ``passages`` hits, or None when there is none.

    ``stored`` gives a hit's precomputed sentence vectors (the index's); ``encode`` maps
    texts to unit-length vectors (the index's MiniLM embedder) for the question, unless
    ``query_vector`` is given, and for any hit without stored vectors. With neither the
    choice is lexical only.
    """
    ranked = rank_evidence(
        question,
        hits,
        encode,
        stored=stored,
        query_vector=query_vector,
        passages=passages,
        keep=1,
    )
    return ranked[0] if ranked else None


def rank_evidence(
    question: str,
    hits: Sequence[SearchHit],
    encode: Encode | None = None,
    *,
    stored: SentenceVectors | None = None,
    query_vector: np.ndarray | None = None,
    passages: int = EVIDENCE_PASSAGES,
    keep: int = 2,
) -> list[Evidence]:
    """The ``keep`` best sentences of the first ``passages`` hits, best first (scored as in
    :func:`select_evidence`; the reader reads the first few)."""
    candidates: list[tuple[int, str]] = []
    vectors: list[np.ndarray | None] = []
    for n, hit in enumerate(hits[:passages], start=1):
        texts = units(hit.chunk.text)
        known = stored(hit) if stored is not None else None
        if known is not None and len(known) != len(texts):
            known = None  # cut differently from this lorebot's segmentation: embed afresh
        for i, unit in enumerate(texts):
            if looks_like_instruction(unit):
                continue
            candidates.append((n, unit))
            vectors.append(known[i] if known is not None else None)
    if not candidates:
        return []
    wanted = content_words(question)
    lexical = np.array(
        [len(content_words(unit) & wanted) for _, unit in candidates], dtype=np.float32
    )
    lexical = lexical / max(1.0, float(lexical.max()))
    bonus = np.zeros(len(candidates), dtype=np.float32)
    if asks_for_number(question):
        bonus += np.array(
            [NUMBER_BONUS if _DIGIT.search(u) else 0.0 for _, u in candidates], dtype=np.float32
        )

    q = query_vector
    if q is None and encode is not None:
        q = np.asarray(encode([question]), dtype=np.float32)[0]
    fresh = [v is None for v in vectors]  # embedded on its own here, not pooled from its chunk
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing and encode is not None:
        encoded = np.asarray(encode([candidates[i][1] for i in missing]), dtype=np.float32)
        for j, i in enumerate(missing):
            vectors[i] = encoded[j]
    if q is None or any(v is None for v in vectors):
        score = lexical + bonus  # no embeddings to be had: words and numbers decide
        order = [int(i) for i in np.argsort(-score, kind="stable")]
        cosine: dict[int, float] = {}
    else:
        q = np.asarray(q, dtype=np.float32)
        dense = np.stack(vectors).astype(np.float32) @ q  # type: ignore[arg-type]
        score = dense + LEXICAL_WEIGHT * lexical + bonus
        # Pooled vectors carry their chunk's context, which finds the right neighbourhood
        # but blurs the sentences of one passage together: the few best are embedded on
        # their own and decide among themselves (see RERANK).
        shortlist = [int(i) for i in np.argsort(-score, kind="stable")[: max(RERANK, keep)]]
        cosine = {i: float(dense[i]) for i in shortlist if fresh[i]}
        pooled = [i for i in shortlist if not fresh[i]]
        if pooled and encode is not None:
            alone = np.asarray(encode([candidates[i][1] for i in pooled]), dtype=np.float32) @ q
            for j, i in enumerate(pooled):
                score[i] = alone[j] + LEXICAL_WEIGHT * lexical[i] + bonus[i]
                cosine[i] = float(alone[j])
        order = sorted(shortlist, key=lambda i: -float(score[i]))
    out = []
    for i in order[:keep]:
        n, text = candidates[i]
        if len(text) > MAX_QUOTE_CHARS:
            text = text[: MAX_QUOTE_CHARS - 1].rsplit(" ", 1)[0] + "…"
        out.append(Evidence(passage=n, text=text, score=float(score[i]), cosine=cosine.get(i)))
    return out


_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def contradicts(answer: str, evidence: Evidence, question: str) -> bool:
    """Whether the model's sentence names a number that neither the quote nor the question has."""
    allowed = set(_NUMBER.findall(evidence.text)) | set(_NUMBER.findall(question))
    said = {n for n in _NUMBER.findall(re.sub(r"\[\d+\]", " ", answer))}
    return bool(said - allowed) and bool(_NUMBER.findall(evidence.text))


def informative(answer: str, evidence: Evidence, question: str) -> bool:
    """Whether the model's sentence says something of the quote's beyond the question's words."""
    new = content_words(re.sub(r"\[\d+\]", " ", answer)) - content_words(question)
    return bool(new & content_words(evidence.text))


def compose(answer: str, evidence: Evidence | None, question: str) -> str:
    """The text users see: the model's sentence when it is useful, and the quoted evidence.

    The quote is left out when the model's sentence already contains it word for word.
    """
    if evidence is None:
        return answer
    quote = f"> {evidence.text} [{evidence.passage}]"
    model_text = answer.strip()
    if (
        not model_text
        or contradicts(model_text, evidence, question)
        or not informative(model_text, evidence, question)
    ):
        return quote
    if " ".join(evidence.text.lower().split()) in " ".join(model_text.lower().split()):
        return model_text
    return f"{model_text}\n{quote}"
