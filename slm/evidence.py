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
sentence after it, which it names. A sentence that addresses the assistant ("ignore
previous instructions", "SYSTEM:", a fake dialogue turn) is never quoted. Measured on the
sample handbook: see the README.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lorebot.types import SearchHit
from slm.prompt import content_words, split_sentences

#: Passages (in retrieval order) whose sentences compete.
EVIDENCE_PASSAGES = 3
#: Weight of the lexical share next to the cosine similarity.
LEXICAL_WEIGHT = 0.5
#: Bonus for a sentence with a digit when the question asks for a quantity.
NUMBER_BONUS = 0.2
#: A unit shorter than this (in words) without end punctuation is a heading or label.
LABEL_WORDS = 5
#: Longest quote kept, in characters (a table row can be long).
MAX_QUOTE_CHARS = 300

Encode = Callable[[list[str]], np.ndarray]

_ASKS_NUMBER = re.compile(
    r"\b(?:how (?:many|much|long|old|far|early|late|often|soon)|what time|when|which (?:day|date|month|year)|"
    r"what (?:year|date|day|number|percentage|extension)|extension|phone|call|number|percent|max(?:imum)?|min(?:imum)?|limit)\b",
    re.IGNORECASE,
)
_DIGIT = re.compile(r"\d")
# A sentence that speaks to the assistant rather than to staff: an injected instruction.
# It is never quoted (the model may still read it; the reliability suite measures that).
_INSTRUCTION = re.compile(
    r"ignore (?:all |any )?(?:the )?(?:previous|prior|above|earlier) (?:instructions|prompts?)"
    r"|\b(?:system|assistant|user)\s*:|</?\s*(?:passages?|system|instructions?)\s*>|\bnew instructions\b"
    r"|\b(?:reply|respond|answer) only with\b|\bsystem prompt\b|\bassistant instruction\b",
    re.IGNORECASE,
)
_UNDERLINE = re.compile(r"^[=\-_#*\s]+$")


@dataclass(frozen=True)
class Evidence:
    """One quoted sentence and the passage it comes from (1-based, as in the prompt)."""

    passage: int
    text: str
    score: float


def units(text: str) -> list[str]:
    """Sentences of a passage, with headings and labels joined to what follows them."""
    out: list[str] = []
    pending = ""
    for sentence in split_sentences(text):
        words = [w for w in sentence.split() if not _UNDERLINE.match(w)]
        if not words:
            continue
        sentence = " ".join(words)
        if len(words) < LABEL_WORDS and not sentence.endswith((".", "!", "?")):
            pending = f"{pending} {sentence}".strip() if pending else sentence
            continue
        out.append(f"{pending}: {sentence}" if pending else sentence)
        pending = ""
    if pending and not out:
        out.append(pending)
    return out


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
    passages: int = EVIDENCE_PASSAGES,
) -> Evidence | None:
    """The best-matching sentence of the first ``passages`` hits, or None when there is none.

    ``encode`` maps texts to unit-length vectors (the index's MiniLM embedder); without
    it the choice is lexical only.
    """
    candidates = [
        (n, unit)
        for n, hit in enumerate(hits[:passages], start=1)
        for unit in units(hit.chunk.text)
        if not looks_like_instruction(unit)
    ]
    if not candidates:
        return None
    wanted = content_words(question)
    lexical = np.array(
        [len(content_words(unit) & wanted) for _, unit in candidates], dtype=np.float32
    )
    score = lexical / max(1.0, float(lexical.max()))
    if encode is not None:
        vectors = np.asarray(encode([unit for _, unit in candidates] + [question]), dtype=np.float32)
        score = vectors[:-1] @ vectors[-1] + LEXICAL_WEIGHT * score
    if asks_for_number(question):
        score = score + np.array(
            [NUMBER_BONUS if _DIGIT.search(unit) else 0.0 for _, unit in candidates], dtype=np.float32
        )
    best = int(np.argmax(score))
    n, text = candidates[best]
    if len(text) > MAX_QUOTE_CHARS:
        text = text[: MAX_QUOTE_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return Evidence(passage=n, text=text, score=float(score[best]))


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
    if not model_text or contradicts(model_text, evidence, question) or not informative(
        model_text, evidence, question
    ):
        return quote
    if " ".join(evidence.text.lower().split()) in " ".join(model_text.lower().split()):
        return model_text
    return f"{model_text}\n{quote}"
